"""Checkpoints in Dassl's layout: <dir>/<model>/model.pth.tar-<epoch>, plus a
`checkpoint` file naming the latest one, and `model-best.pth.tar`.

Every file is read with `torch.load(weights_only=True)`: a checkpoint holds tensors,
numbers, strings and containers only (RNG states are stored as tensors and lists, the
scheduler state is plain numbers), so no class is allow-listed and a crafted file never
runs code. Every file is written to a uniquely named temporary file and renamed, so a
run killed at any point leaves the previous checkpoint intact.
"""
import os
import os.path as osp
import pickle
import re
import shutil
from collections import OrderedDict

import torch

from ..files import write_atomic, write_text_atomic

from .utils import mkdir_if_missing

MARKER = "checkpoint"
BEST = "model-best.pth.tar"


class CheckpointError(ValueError):
    """A checkpoint or weights file that cannot be used: the message names it and the fix."""


def _looks_like_text(head):
    return bool(head) and all(32 <= b < 127 or b in (9, 10, 13) for b in head)


def _load_tensors_only(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def read_torch_file(path, what, fix, load=_load_tensors_only, allowed="tensors and numbers"):
    """`torch.load(path, weights_only=True)` on the CPU, with one clear error for an
    empty, text, truncated or corrupt file, and for a file that holds pickled objects
    (refused, never unpickled). `what` names the file's role, `fix` says what to do;
    `load(path)` reads it (a Dassl loader with its own allow-list: `allowed` says what
    that allows)."""
    with open(path, "rb") as f:
        head = f.read(64)
    if not head:
        raise CheckpointError(f"{what} {path} is empty: {fix}")
    if _looks_like_text(head):
        shown = head.decode("ascii").splitlines()[0][:40]
        raise CheckpointError(f"{what} {path} is a text file (it starts with {shown!r}), not a torch file: {fix}")
    try:
        return load(path)
    except pickle.UnpicklingError as err:
        if "weights only" not in str(err).lower():  # not a pickle at all
            reason = str(err).splitlines()[0][:80]
            raise CheckpointError(f"{what} {path} is truncated or corrupt ({reason}): {fix}") from None
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        holds = f" (it holds {found.group(1)})" if found else ""
        raise CheckpointError(
            f"{what} {path} holds Python objects other than {allowed}{holds}; it is refused because "
            f"loading it could run code from the file. It was not written by LE-CLIP: {fix}"
        ) from None
    except (RuntimeError, EOFError, OSError, KeyError, ValueError) as err:
        reason = str(err).splitlines()[0].split(". ")[0] if str(err) else type(err).__name__
        raise CheckpointError(f"{what} {path} is truncated or corrupt ({reason}): {fix}") from None


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
    write_atomic(fpath, lambda tmp: torch.save(state, tmp))
    print(f"Checkpoint saved to {fpath}")
    if not model_name:
        write_text_atomic(osp.join(save_dir, MARKER), f"{osp.basename(fpath)}\n")
    if is_best:
        best_fpath = osp.join(save_dir, BEST)
        write_atomic(best_fpath, lambda tmp: shutil.copyfile(fpath, tmp))
        print(f'Best checkpoint saved to "{best_fpath}"')
    return fpath


def epoch_of(path):
    """The epoch in a model.pth.tar-<epoch> file name."""
    match = re.fullmatch(r"model\.pth\.tar-(\d+)", osp.basename(path))
    if match is None:
        raise CheckpointError(f"{path}: a checkpoint marker must name a model.pth.tar-<epoch> file")
    return int(match.group(1))


def epoch_files(fdir):
    """{epoch: path} of the model.pth.tar-<epoch> files in `fdir`."""
    found = {}
    for name in os.listdir(fdir) if osp.isdir(fdir) else ():
        match = re.fullmatch(r"model\.pth\.tar-(\d+)", name)
        if match:
            found[int(match.group(1))] = osp.join(fdir, name)
    return found


def checkpoint_fix(fpath):
    """What to do about an unreadable checkpoint <out>/<model>/<file>: fall back to the
    latest earlier epoch, or start the run again."""
    folder = osp.dirname(fpath)
    earlier = sorted(e for e in epoch_files(folder) if osp.join(folder, f"model.pth.tar-{e}") != fpath)
    fix = "delete it"
    if earlier:
        fix += f" and write model.pth.tar-{earlier[-1]} into {osp.join(folder, MARKER)} to resume from that epoch"
    return fix + f", or delete {osp.dirname(folder) or folder} to start the run again"


def load_checkpoint(fpath):
    if not fpath or not osp.isfile(fpath):
        raise FileNotFoundError(f'Checkpoint not found at "{fpath}" (check the path / --model-dir)')
    return read_torch_file(fpath, "Checkpoint", checkpoint_fix(fpath))


def latest_checkpoint(fdir):
    """Path named by fdir/checkpoint, or None when there is no marker."""
    marker = osp.join(fdir, MARKER)
    if not osp.isfile(marker):
        return None
    with open(marker) as f:
        name = f.readline().strip()
    if not name:
        raise CheckpointError(
            f"{marker} is empty: write the name of the last model.pth.tar-<epoch> file into it, or delete {fdir} "
            "to start again"
        )
    return osp.join(fdir, name)


def load_state(module, state_dict, what, source):
    """module.load_state_dict(state_dict), with one clear error when the shapes or keys differ."""
    try:
        module.load_state_dict(state_dict)
    except (RuntimeError, KeyError, ValueError) as err:
        detail = "; ".join(line.strip() for line in str(err).splitlines()[1:4] if line.strip()) or str(err)
        raise CheckpointError(
            f"The {what} in {source} does not fit the one this config builds ({detail}): the config changed since "
            "it was saved. Resume with the config it was saved with (config.yaml beside it), or use another "
            "output folder to start afresh"
        ) from None


def restore(checkpoint, model, optimizer=None, scheduler=None, source="the checkpoint"):
    """Load a checkpoint dict into a model and, when given, its optimizer and scheduler."""
    load_state(model, checkpoint["state_dict"], "model", source)
    print("Loaded model weights")
    if optimizer is not None and checkpoint.get("optimizer") is not None:
        load_state(optimizer, checkpoint["optimizer"], "optimizer state", source)
        print("Loaded optimizer")
    if scheduler is not None and checkpoint.get("scheduler") is not None:
        scheduler.load_state_dict(checkpoint["scheduler"])
        print("Loaded scheduler")


def load_latest(fdir, read=load_checkpoint):
    """The checkpoint dict named by fdir/checkpoint, read by `read(path)` (clear error
    when there is none)."""
    fpath = latest_checkpoint(fdir)
    if fpath is None:
        raise FileNotFoundError(f'No "{MARKER}" file in "{fdir}": nothing to resume from')
    print(f'Loading checkpoint from "{fpath}"')
    return read(fpath)


def resume_from_checkpoint(fdir, model, optimizer=None, scheduler=None, read=load_checkpoint):
    """Load the latest checkpoint of `fdir` (read by `read(path)`, e.g. Dassl's loader);
    returns the epoch to start from."""
    checkpoint = load_latest(fdir, read)
    restore(checkpoint, model, optimizer, scheduler, source=fdir)
    print(f"Previous epoch: {checkpoint['epoch']}")
    return checkpoint["epoch"]


def load_pretrained_weights(model, weight_path):
    """Load the layers of `weight_path` whose names and shapes match the model;
    returns the names of the discarded ones."""
    if not weight_path or not osp.isfile(weight_path):
        raise FileNotFoundError(f'Weights not found at "{weight_path}" (check MODEL.INIT_WEIGHTS)')
    fix = "give a state dict saved with torch.save (MODEL.INIT_WEIGHTS)"
    checkpoint = read_torch_file(weight_path, "Weights file", fix)
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
