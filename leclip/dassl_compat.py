"""Fixes for Dassl.pytorch on current torch and numpy, applied by `leclip.dassl`.

- dassl/optim/lr_scheduler.py: `_BaseWarmupScheduler.__init__` passes `verbose` to
  torch's LRScheduler constructor, which no longer takes it: every config with
  OPTIM.WARMUP_EPOCH > 0 fails with a TypeError when the scheduler is built.
- dassl/utils/torchtools.py: `load_checkpoint` calls `torch.load` without
  `weights_only`, which defaults to True since torch 2.6 and refuses Dassl's own
  checkpoints (a warm-up scheduler's state holds its successor scheduler object), so
  resuming and `--eval-only` fail.
- dassl/data/transforms/randaugment.py and autoaugment.py use `np.int`, removed in
  numpy 1.24.
"""
import inspect
import types

import numpy as np
import torch
from torch.optim.lr_scheduler import LRScheduler

_applied = False


def _warmup_init(self, optimizer, successor, warmup_epoch, last_epoch=-1, verbose=False):
    """Dassl's _BaseWarmupScheduler.__init__ without handing `verbose` to torch."""
    self.successor = successor
    self.warmup_epoch = warmup_epoch
    LRScheduler.__init__(self, optimizer, last_epoch)


class _TorchLoadingFullCheckpoints(types.ModuleType):
    """`torch` as Dassl's torchtools module sees it: the same module, except that
    `load` defaults to weights_only=False (Dassl loads only its own checkpoints and
    the pretrained weights a config names)."""

    def __init__(self):
        super().__init__("torch")

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def load(f, *args, **kwargs):
        kwargs.setdefault("weights_only", False)
        return torch.load(f, *args, **kwargs)


def patch():
    """Apply the three fixes once; later calls do nothing."""
    global _applied
    if _applied:
        return
    import dassl.optim.lr_scheduler as lr_scheduler
    import dassl.utils.torchtools as torchtools

    warmup = getattr(lr_scheduler, "_BaseWarmupScheduler", None)
    torch_takes_verbose = "verbose" in inspect.signature(LRScheduler.__init__).parameters
    if warmup is not None and not torch_takes_verbose:
        warmup.__init__ = _warmup_init
    # every caller of Dassl's load_checkpoint (trainers, load_pretrained_weights,
    # resume_from_checkpoint, forks that imported it early) resolves `torch` here
    if torchtools.torch is torch:
        torchtools.torch = _TorchLoadingFullCheckpoints()
    if "int" not in np.__dict__:
        np.int = int
    _applied = True
