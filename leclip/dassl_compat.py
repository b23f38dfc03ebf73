"""Fixes for Dassl.pytorch on current torch and numpy, applied by `leclip.dassl`.

- dassl/optim/lr_scheduler.py: `_BaseWarmupScheduler.__init__` passes `verbose` to
  torch's LRScheduler constructor, which no longer takes it: every config with
  OPTIM.WARMUP_EPOCH > 0 fails with a TypeError when the scheduler is built.
- dassl/utils/torchtools.py: `load_checkpoint` calls `torch.load` without
  `weights_only`, which defaults to True since torch 2.6 and refuses Dassl's own
  checkpoints (a warm-up scheduler's state holds its successor scheduler object, and
  that the optimizer object), so resuming and `--eval-only` fail. The fix keeps
  `weights_only=True` and allow-lists exactly the classes such a checkpoint holds
  (Dassl's successor schedulers and optimizers, and their `defaultdict(dict)` state,
  read as a dict), for Dassl's loads only: nothing else in the process loads unsafely.
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


def _state_as_dict(default_factory=None):
    """Stands in for `collections.defaultdict` when a Dassl checkpoint is read: torch's
    safe loader fills dicts only. It rebuilds the optimizer state inside the pickled
    successor scheduler, a copy that Dassl's scheduler keeps and never steps."""
    return {}


def dassl_checkpoint_classes():
    """What a Dassl checkpoint pickles: the successor schedulers of its warm-up wrapper
    (dassl/optim/lr_scheduler.py), the optimizers it builds (dassl/optim/optimizer.py)
    and their `defaultdict(dict)` state."""
    classes = [
        torch.optim.lr_scheduler.StepLR,
        torch.optim.lr_scheduler.MultiStepLR,
        torch.optim.lr_scheduler.CosineAnnealingLR,
        torch.optim.SGD,
        torch.optim.Adam,
        torch.optim.AdamW,
        torch.optim.RMSprop,
        (_state_as_dict, "collections.defaultdict"),
        dict,
    ]
    try:
        from dassl.optim.radam import RAdam
    except ImportError:  # a Dassl without its RAdam
        pass
    else:
        classes.append(RAdam)
    return classes


class _TorchLoadingDasslCheckpoints(types.ModuleType):
    """`torch` as Dassl's torchtools module sees it: the same module, except that `load`
    reads with weights_only=True and Dassl's checkpoint classes allowed."""

    def __init__(self):
        super().__init__("torch")

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def load(f, *args, **kwargs):
        kwargs.setdefault("weights_only", True)
        with torch.serialization.safe_globals(dassl_checkpoint_classes()):
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
        torchtools.torch = _TorchLoadingDasslCheckpoints()
    if "int" not in np.__dict__:
        np.int = int
    _applied = True
