"""A miniature Dassl.pytorch package, written into a folder by the tests.

It has Dassl's module layout and takes its loop, registries and config from LE-CLIP's
built-in engine, with Dassl's breakages planted in it, each in our own words: the warm-up scheduler hands `verbose` to torch, `load_checkpoint`
relies on torch.load's default, RandAugment uses `np.int`, and the Logger closes the
console it wraps; a trainer without models cannot resume (nor train); importing it
switches logging off below WARNING; and `load_model` fails on a checkpoint without a
validation result. `write(root, broken=False)` writes one without
them (a Dassl that needs no fix). The loop its trainers run is LE-CLIP's, whose resume
handles a trainer without models: the planted one is on `dassl.engine.trainer.TrainerBase`. On PYTHONPATH, `import dassl` finds it; `installed()` makes it `dassl` in this process.
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

from dassl.utils import load_checkpoint
from leclip.engine import SimpleTrainer  # noqa: F401
from leclip.engine import TrainerBase as _EngineTrainerBase


class TrainerBase(_EngineTrainerBase):
    def resume_model_if_exist(self, directory):
{RESUME}        for name in self.get_model_names():
            start_epoch = _EngineTrainerBase.resume_model_if_exist(self, directory)
        return start_epoch  # unset when no model is registered

    def load_model(self, directory, epoch=None):
        for name in self.get_model_names():
            checkpoint = load_checkpoint(osp.join(directory, name, f"model.pth.tar-{epoch}"))
            val_result = checkpoint["val_result"]
            shown = {VAL_RESULT}
            print(f"Load {name} (epoch={checkpoint['epoch']}, val_result={shown})")
            self._models[name].load_state_dict(checkpoint["state_dict"])
'''

_TORCHTOOLS = '''
import torch


def load_checkpoint(fpath):
    return torch.load(fpath, map_location="cpu"{LOAD_ARGS})
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
        "dassl/engine/__init__.py": "from leclip.engine import TRAINER_REGISTRY, TrainerX, TrainerXU, build_trainer\n",
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
        ),
        "dassl/utils/__init__.py": (
            "from leclip.engine import (AverageMeter, MetricMeter, Registry, collect_env_info, count_num_param,\n"
            "                           load_pretrained_weights, mkdir_if_missing, save_checkpoint, set_random_seed)\n\n"
            "from .logger import setup_logger\nfrom .torchtools import load_checkpoint\n"
        ),
        "dassl/utils/torchtools.py": _TORCHTOOLS.replace(
            "{LOAD_ARGS}", "" if broken else ", weights_only=True"
        ),
        "dassl/utils/logger.py": _LOGGER.replace(
            "{CLOSE}", "self.console.close()\n        self.file.close()" if broken else "self.file.close()"
        ),
    }
    if not broken:  # its own checkpoints load: it allow-lists what its warm-up scheduler pickles
        files["dassl/utils/torchtools.py"] = (
            "import torch\n\nSAFE = [torch.optim.lr_scheduler.StepLR, torch.optim.lr_scheduler.CosineAnnealingLR,\n"
            "        torch.optim.SGD, __import__('collections').defaultdict, dict]\n\n\n"
            "def load_checkpoint(fpath):\n    with torch.serialization.safe_globals(SAFE):\n"
            "        return torch.load(fpath, map_location='cpu', weights_only=True)\n"
        )
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
