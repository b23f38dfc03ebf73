"""Fixes for Dassl.pytorch on current torch and numpy, applied once at import.

- Dassl's warm-up schedulers pass `verbose` to torch's LRScheduler, whose constructor
  no longer takes it (torch >= 2.7).
- Dassl's `load_checkpoint` calls `torch.load` without `weights_only`, which defaults to
  True since torch 2.6 and refuses Dassl's own checkpoints (they hold non-tensor state).
- `np.int` was removed from numpy; Dassl's RandAugment and AutoAugment still use it.
"""
import os.path as osp

import numpy as np
import torch

_applied = False


def _warmup_init(self, optimizer, successor, warmup_epoch, last_epoch=-1, verbose=False):
    self.successor = successor
    self.warmup_epoch = warmup_epoch
    torch.optim.lr_scheduler.LRScheduler.__init__(self, optimizer, last_epoch)


def _load_checkpoint(fpath):
    if fpath is None:
        raise ValueError("File path is None")
    if not osp.exists(fpath):
        raise FileNotFoundError(f'File is not found at "{fpath}"')
    # Dassl's checkpoints hold optimizer/scheduler state and Python numbers
    return torch.load(fpath, map_location=None if torch.cuda.is_available() else "cpu", weights_only=False)


def patch():
    global _applied
    if _applied:
        return
    import dassl.engine.trainer
    import dassl.optim.lr_scheduler as lr_scheduler
    import dassl.utils
    import dassl.utils.torchtools as torchtools

    lr_scheduler._BaseWarmupScheduler.__init__ = _warmup_init
    # rebind every module that imported the name directly
    for module in (torchtools, dassl.utils, dassl.engine.trainer):
        if hasattr(module, "load_checkpoint"):
            module.load_checkpoint = _load_checkpoint
    if "int" not in np.__dict__:
        np.int = int
    _applied = True
