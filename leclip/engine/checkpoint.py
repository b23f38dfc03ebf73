"""Checkpoints in Dassl's layout: <dir>/<model>/model.pth.tar-<epoch>, plus a
`checkpoint` file naming the latest one, and `model-best.pth.tar`."""
import os
import os.path as osp
import shutil
from collections import OrderedDict

import torch

from .utils import mkdir_if_missing

MARKER = "checkpoint"
BEST = "model-best.pth.tar"


def save_checkpoint(state, save_dir, is_best=False, remove_module_from_keys=True, model_name=""):
    """Save `state` (with "state_dict" and "epoch") as save_dir/model.pth.tar-<epoch>, or
    as `model_name`. Only epoch checkpoints update the `checkpoint` marker (Dassl also
    points it at model-best, which would resume from the wrong epoch)."""
    mkdir_if_missing(save_dir)
    if remove_module_from_keys:
        state["state_dict"] = OrderedDict(
            (k[7:] if k.startswith("module.") else k, v) for k, v in state["state_dict"].items()
        )
    fpath = osp.join(save_dir, model_name or f"model.pth.tar-{state['epoch']}")
    # write then rename: a run killed mid-write never leaves a truncated checkpoint
    torch.save(state, fpath + ".tmp")
    os.replace(fpath + ".tmp", fpath)
    print(f"Checkpoint saved to {fpath}")
    if not model_name:
        with open(osp.join(save_dir, MARKER), "w") as f:
            f.write(f"{osp.basename(fpath)}\n")
    if is_best:
        best_fpath = osp.join(save_dir, BEST)
        shutil.copy(fpath, best_fpath)
        print(f'Best checkpoint saved to "{best_fpath}"')
    return fpath


def load_checkpoint(fpath):
    if not fpath or not osp.isfile(fpath):
        raise FileNotFoundError(f'Checkpoint not found at "{fpath}" (check the path / --model-dir)')
    # our checkpoints hold optimizer, scheduler and RNG state, not only tensors
    return torch.load(fpath, map_location="cpu", weights_only=False)


def latest_checkpoint(fdir):
    """Path named by fdir/checkpoint, or None when there is no marker."""
    marker = osp.join(fdir, MARKER)
    if not osp.isfile(marker):
        return None
    with open(marker) as f:
        return osp.join(fdir, f.readline().strip())


def restore(checkpoint, model, optimizer=None, scheduler=None):
    """Load a checkpoint dict into a model and, when given, its optimizer and scheduler."""
    model.load_state_dict(checkpoint["state_dict"])
    print("Loaded model weights")
    if optimizer is not None and checkpoint.get("optimizer") is not None:
        optimizer.load_state_dict(checkpoint["optimizer"])
        print("Loaded optimizer")
    if scheduler is not None and checkpoint.get("scheduler") is not None:
        scheduler.load_state_dict(checkpoint["scheduler"])
        print("Loaded scheduler")


def load_latest(fdir):
    """The checkpoint dict named by fdir/checkpoint (clear error when there is none)."""
    fpath = latest_checkpoint(fdir)
    if fpath is None:
        raise FileNotFoundError(f'No "{MARKER}" file in "{fdir}": nothing to resume from')
    print(f'Loading checkpoint from "{fpath}"')
    return load_checkpoint(fpath)


def resume_from_checkpoint(fdir, model, optimizer=None, scheduler=None):
    """Load the latest checkpoint of `fdir`; returns the epoch to start from."""
    checkpoint = load_latest(fdir)
    restore(checkpoint, model, optimizer, scheduler)
    print(f"Previous epoch: {checkpoint['epoch']}")
    return checkpoint["epoch"]


def load_pretrained_weights(model, weight_path):
    """Load the layers of `weight_path` whose names and shapes match the model;
    returns the names of the discarded ones."""
    checkpoint = load_checkpoint(weight_path)
    state_dict = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else checkpoint
    state_dict = {k[7:] if k.startswith("module.") else k: v for k, v in state_dict.items()}
    own = model.state_dict()
    matched = {k: v for k, v in state_dict.items() if k in own and own[k].size() == v.size()}
    if not matched:
        raise ValueError(
            f'No layer of "{weight_path}" matches the model by name and shape: check the file (MODEL.INIT_WEIGHTS)'
        )
    own.update(matched)
    model.load_state_dict(own)
    discarded = sorted(set(state_dict) - set(matched))
    print(f'Successfully loaded pretrained weights from "{weight_path}"')
    if discarded:
        print(f"** The following layers are discarded due to unmatched keys or layer size: {discarded}")
    return discarded
