"""Checkpoints in Dassl's layout: <dir>/<model>/model.pth.tar-<epoch> plus a `checkpoint` file."""
import os
import os.path as osp
import shutil
from collections import OrderedDict

import torch

from .utils import mkdir_if_missing


def save_checkpoint(state, save_dir, is_best=False, remove_module_from_keys=True, model_name=""):
    mkdir_if_missing(save_dir)
    if remove_module_from_keys:
        state["state_dict"] = OrderedDict(
            (k[7:] if k.startswith("module.") else k, v) for k, v in state["state_dict"].items()
        )
    name = model_name or f"model.pth.tar-{state['epoch']}"
    fpath = osp.join(save_dir, name)
    torch.save(state, fpath + ".tmp")
    # atomic: a kill during the write never leaves a half checkpoint behind
    os.replace(fpath + ".tmp", fpath)
    with open(osp.join(save_dir, "checkpoint"), "w") as f:
        f.write(f"{osp.basename(fpath)}\n")
    if is_best:
        shutil.copy(fpath, osp.join(osp.dirname(fpath), "model-best.pth.tar"))
    return fpath


def load_checkpoint(fpath):
    if not fpath or not osp.exists(fpath):
        raise FileNotFoundError(f'Checkpoint not found at "{fpath}"')
    # our own checkpoints hold optimizer/scheduler/RNG state, not only tensors
    return torch.load(fpath, map_location="cpu", weights_only=False)


def latest_checkpoint(save_dir):
    """Path of the checkpoint named in `save_dir/checkpoint`, or None."""
    marker = osp.join(save_dir, "checkpoint")
    if not osp.exists(marker):
        return None
    with open(marker) as f:
        return osp.join(save_dir, f.readline().strip())


def load_pretrained_weights(model, weight_path):
    checkpoint = load_checkpoint(weight_path)
    state_dict = checkpoint.get("state_dict", checkpoint)
    state_dict = {k[7:] if k.startswith("module.") else k: v for k, v in state_dict.items()}
    own = model.state_dict()
    matched = {k: v for k, v in state_dict.items() if k in own and own[k].size() == v.size()}
    if not matched:
        raise ValueError(f'No layer of "{weight_path}" matches the model: check the file')
    own.update(matched)
    model.load_state_dict(own)
    return sorted(set(state_dict) - set(matched))
