"""A miniature Dassl.pytorch package, written into a folder by the tests.

It has Dassl's module layout and takes its loop, registries and config from LE-CLIP's
built-in engine, with Dassl's breakages planted in it, each in our own words: the
warm-up scheduler hands `verbose` to torch and resumes with the saved copy of its
successor; `load_checkpoint` relies on torch.load's default and gives torch's bare
error for a bad file; `resume_from_checkpoint` gives bare errors for an empty marker
and a changed shape; RandAugment uses `np.int`; the Logger closes the console it wraps;
a trainer without models cannot resume (nor train); importing it switches logging off
below WARNING; and `load_model` fails on a checkpoint without a validation result.
`write(root, broken=False)` writes one without them (a Dassl that needs no fix).

Its trainers (`dassl.engine.trainer`) run LE-CLIP's loop with Dassl's checkpoints and
epochs: `save_model` writes weights, optimizer, scheduler, epoch and val_result only (no
trainer state), the resume is the planted one (through `resume_from_checkpoint`), and the
epochs are not reseeded. On PYTHONPATH,
`import dassl` finds it; `installed()` makes it `dassl` in this process.
"""
import contextlib
import logging
import os
import os.path as osp
import sys

import numpy as np

_BROKEN_WARMUP = '''
import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, _LRScheduler


class _BaseWarmupScheduler(_LRScheduler):
    """Holds the warm-up LR, then hands over to `successor`."""

    def __init__(self, optimizer, successor, warmup_epoch, last_epoch=-1, verbose=False):
        self.successor = successor
        self.warmup_epoch = warmup_epoch
        super().__init__(optimizer, last_epoch, verbose){VERBOSE_BREAKAGE}

{LOAD_STATE}
    def step(self, epoch=None):
        if self.last_epoch + 1 >= self.warmup_epoch:
            self.successor.step()
            self.last_epoch += 1
            self._last_lr = self.successor.get_last_lr()
        else:
            super().step()


class ConstantWarmupScheduler(_BaseWarmupScheduler):
    def __init__(self, optimizer, successor, warmup_epoch, cons_lr, last_epoch=-1, verbose=False):
        self.cons_lr = cons_lr
        super().__init__(optimizer, successor, warmup_epoch, last_epoch, verbose)

    def get_lr(self):
        return [self.cons_lr for _ in self.base_lrs]


def build_lr_scheduler(optimizer, optim_cfg):
    successor = CosineAnnealingLR(optimizer, float(optim_cfg.MAX_EPOCH))
    if optim_cfg.WARMUP_EPOCH > 0:
        return ConstantWarmupScheduler(optimizer, successor, optim_cfg.WARMUP_EPOCH, optim_cfg.WARMUP_CONS_LR)
    return successor
'''

# a warm-up scheduler whose resume keeps its own successor (without it, torch's
# load_state_dict puts the saved copy, bound to a copy of the optimizer, in its place)
_WARMUP_LOAD_STATE = '''
    def load_state_dict(self, state_dict):
        state = {key: value for key, value in state_dict.items() if key != "successor"}
        super().load_state_dict(state)
        self.successor.load_state_dict(state_dict["successor"].state_dict())
'''

_LOGGER = '''
import contextlib
import logging
import os
import os.path as osp
import sys

import numpy as np
import sys


class Logger:
    """stdout into a log file too."""

    def __init__(self, fpath):
        self.console = sys.stdout
        os.makedirs(osp.dirname(fpath), exist_ok=True)
        self.file = open(fpath, "w")

    def __del__(self):
        self.close()

    def write(self, msg):
        self.console.write(msg)
        self.file.write(msg)

    def flush(self):
        self.console.flush()
        self.file.flush()

    def close(self):
        {CLOSE}


def setup_logger(output):
    sys.stdout = Logger(osp.join(output, "log.txt"))
'''

_TRAINER_BASE = '''
import os.path as osp

from dassl.utils import load_checkpoint, resume_from_checkpoint, save_checkpoint
from leclip.engine import trainer as _engine


class TrainerBase(_engine.TrainerBase):
    def save_model(self, epoch, directory, is_best=False, val_result=None, model_name=""):
        # weights, optimizer, scheduler, epoch and val_result: nothing of the trainer's own
        for name in self.get_model_names():
            optim, sched = self._optims[name], self._scheds[name]
            checkpoint = {
                "state_dict": self._models[name].state_dict(), "epoch": epoch + 1,
                "optimizer": None if optim is None else optim.state_dict(),
                "scheduler": None if sched is None else sched.state_dict(), "val_result": val_result,
            }
            save_checkpoint(checkpoint, osp.join(directory, name), is_best=is_best, model_name=model_name)

    def resume_model_if_exist(self, directory):
{RESUME}        names = self.get_model_names()
        if not all(osp.isdir(osp.join(directory, name)) for name in names):
            print("No checkpoint found, train from scratch")
            return 0
        for name in names:
            start_epoch = resume_from_checkpoint(
                osp.join(directory, name), self._models[name], self._optims[name], self._scheds[name]
            )
        return start_epoch  # unset when no model is registered

    def load_model(self, directory, epoch=None):
        for name in self.get_model_names():
            checkpoint = load_checkpoint(osp.join(directory, name, f"model.pth.tar-{epoch}"))
            val_result = checkpoint["val_result"]
            shown = {VAL_RESULT}
            print(f"Load {name} (epoch={checkpoint['epoch']}, val_result={shown})")
            self._models[name].load_state_dict(checkpoint["state_dict"])


class SimpleTrainer(TrainerBase, _engine.SimpleTrainer):
    def before_epoch(self):
        pass  # the epochs are not reseeded


class TrainerX(SimpleTrainer, _engine.TrainerX):
    pass


class TrainerXU(SimpleTrainer, _engine.TrainerXU):
    pass
'''

_TORCHTOOLS = '''
import os.path as osp

import torch


def load_checkpoint(fpath):
    return torch.load(fpath, map_location="cpu")


def resume_from_checkpoint(fdir, model, optimizer=None, scheduler=None):
    with open(osp.join(fdir, "checkpoint")) as f:
        fpath = osp.join(fdir, f.readlines()[0].strip())  # IndexError on an empty marker
    checkpoint = load_checkpoint(fpath)
    model.load_state_dict(checkpoint["state_dict"])  # RuntimeError when the shapes changed
    if optimizer is not None and "optimizer" in checkpoint:
        optimizer.load_state_dict(checkpoint["optimizer"])
    if scheduler is not None and "scheduler" in checkpoint:
        scheduler.load_state_dict(checkpoint["scheduler"])
    print(f"Previous epoch: {checkpoint['epoch']}")
    return checkpoint["epoch"]
'''

_TORCHTOOLS_FIXED = '''
import functools

import torch
from leclip.engine import checkpoint as _checkpoint

SAFE = [torch.optim.lr_scheduler.StepLR, torch.optim.lr_scheduler.CosineAnnealingLR,
        torch.optim.SGD, __import__('collections').defaultdict, dict]


def _load(fpath):
    with torch.serialization.safe_globals(SAFE):
        return torch.load(fpath, map_location="cpu", weights_only=True)


def load_checkpoint(fpath):
    return _checkpoint.read_torch_file(fpath, "Checkpoint", "delete it", load=_load)


resume_from_checkpoint = functools.partial(_checkpoint.resume_from_checkpoint, read=load_checkpoint)
'''


def write(root, broken=True):
    """Write the miniature `dassl` package under `root`; `broken=False` writes one
    without the breakages (a Dassl that needs no fix)."""
    files = {
        "dassl/__init__.py": "",
        "dassl/config/__init__.py": (
            "from leclip.engine import DEFAULT_CFG as cfg_default\n\n\n"
            "def get_cfg_default():\n    return cfg_default.clone()\n"
        ),
        "dassl/engine/__init__.py": (
            "from leclip.engine import TRAINER_REGISTRY, build_trainer\n\nfrom .trainer import TrainerX, TrainerXU\n"
        ),
        "dassl/engine/trainer.py": _TRAINER_BASE.replace(
            "{RESUME}", "" if broken else "        if not self.get_model_names():\n            return 0\n"
        ).replace("{VAL_RESULT}", 'f"{val_result:.1f}"' if broken else '"none" if val_result is None else val_result'),
        "dassl/data/__init__.py": "from leclip.engine import DataManager\n\nfrom . import datasets\n",
        "dassl/data/datasets/__init__.py": (
            "from leclip.engine import DATASET_REGISTRY, DatasetBase, Datum, build_dataset\n\n"
            "from .dg.wilds import wilds_base\n"
        ),
        "dassl/data/datasets/dg/__init__.py": "",
        "dassl/data/datasets/dg/wilds/__init__.py": "",
        "dassl/data/datasets/dg/wilds/wilds_base.py": (
            "import logging\n\nlogging.disable(logging.WARNING)\n" if broken else "import logging\n"
        ),
        "dassl/data/transforms/__init__.py": "",
        "dassl/data/transforms/randaugment.py": (
            "import numpy as np\n\n\ndef posterize(pixels, bits):\n"
            f"    return np.asarray(pixels).astype({'np.int' if broken else 'int'}) >> (8 - bits) << (8 - bits)\n"
        ),
        "dassl/evaluation/__init__.py": "from leclip.engine import EVALUATOR_REGISTRY, EvaluatorBase, build_evaluator\n",
        "dassl/optim/__init__.py": "from leclip.engine import build_optimizer\n\nfrom .lr_scheduler import build_lr_scheduler\n",
        "dassl/optim/lr_scheduler.py": _BROKEN_WARMUP.replace(
            "super().__init__(optimizer, last_epoch, verbose){VERBOSE_BREAKAGE}",
            "super().__init__(optimizer, last_epoch, verbose)" if broken else "super().__init__(optimizer, last_epoch)",
        ).replace("{LOAD_STATE}", "" if broken else _WARMUP_LOAD_STATE),
        "dassl/utils/__init__.py": (
            "from leclip.engine import (AverageMeter, MetricMeter, Registry, collect_env_info, count_num_param,\n"
            "                           load_pretrained_weights, mkdir_if_missing, save_checkpoint, set_random_seed)\n\n"
            "from .logger import setup_logger\nfrom .torchtools import load_checkpoint, resume_from_checkpoint\n"
        ),
        # a fixed one loads its own checkpoints (it allow-lists what its warm-up scheduler
        # pickles) and names a bad file
        "dassl/utils/torchtools.py": _TORCHTOOLS if broken else _TORCHTOOLS_FIXED,
        "dassl/utils/logger.py": _LOGGER.replace(
            "{CLOSE}", "self.console.close()\n        self.file.close()" if broken else "self.file.close()"
        ),
    }
    for rel, text in files.items():
        path = osp.join(root, rel)
        os.makedirs(osp.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)


def _dassl_modules():
    return {name: module for name, module in sys.modules.items() if name == "dassl" or name.startswith("dassl.")}


@contextlib.contextmanager
def installed(root, broken=True):
    """The miniature Dassl is `dassl` while the block runs, with numpy lacking `np.int`;
    an installed Dassl's modules (already patched by leclip.dassl) and `np.int` are
    put back after, with everything the block patched gone."""
    write(root, broken)
    saved = _dassl_modules()
    for name in saved:
        del sys.modules[name]
    np_int = vars(np).pop("int", None)
    logging_disabled = logging.root.manager.disable
    sys.path.insert(0, root)
    try:
        yield
    finally:
        sys.path.remove(root)
        for name in _dassl_modules():
            del sys.modules[name]
        sys.modules.update(saved)
        vars(np).pop("int", None)
        if np_int is not None:
            np.int = np_int
        logging.disable(logging_disabled)


# A MaPLe-style fork's vendored clip/model.py: its CLIP wants a `design_details`
# argument, so clip-anytorch's signature cannot build it; LE-CLIP must use its own model
# and take only the fork's tokenizer (any class or builder here fails the test if used)
MAPLE_CLIP_MODEL = '''
"""A fork's model file: its CLIP wants a `design_details` argument (as MaPLe's does)."""
import torch.nn as nn


class CLIP(nn.Module):
    def __init__(self, embed_dim, image_resolution, vision_layers, vision_width, vision_patch_size,
                 context_length, vocab_size, transformer_width, transformer_heads, transformer_layers,
                 design_details):
        raise AssertionError("LE-CLIP built the fork's CLIP")


class VisionTransformer(nn.Module):
    def __init__(self, input_resolution, patch_size, width, layers, heads, output_dim, design_details):
        raise AssertionError("LE-CLIP built the fork's VisionTransformer")


def build_model(state_dict, design_details):
    raise AssertionError("LE-CLIP built the fork's model")
'''
