"""Small utilities with Dassl's names: seeding, logging to log.txt, meters."""
import logging
import os
import random
import sys
from collections import defaultdict

import numpy as np
import torch


def set_random_seed(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def mkdir_if_missing(dirname):
    os.makedirs(dirname, exist_ok=True)


class _Tee:
    """Write to the console and to log.txt, as Dassl's setup_logger does."""

    def __init__(self, console, path):
        self.console = console
        self.file = open(path, "a")

    def write(self, msg):
        self.console.write(msg)
        self.file.write(msg)
        self.flush()

    def flush(self):
        self.console.flush()
        self.file.flush()

    def isatty(self):
        return False


def setup_logger(output=None):
    """Send stdout to `output/log.txt` too (`output` may also be a *.txt path)."""
    if not output:
        return
    fpath = output if output.endswith((".txt", ".log")) else os.path.join(output, "log.txt")
    mkdir_if_missing(os.path.dirname(fpath) or ".")
    console = sys.stdout.console if isinstance(sys.stdout, _Tee) else sys.stdout
    if isinstance(sys.stdout, _Tee):
        sys.stdout.file.close()
    sys.stdout = _Tee(console, fpath)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout, force=True)


def count_num_param(model=None, params=None):
    if params is not None:
        return sum(p.numel() for p in params)
    return sum(p.numel() for p in model.parameters())


def collect_env_info():
    return (
        f"Python {sys.version.split()[0]}, torch {torch.__version__}, "
        f"CUDA available: {torch.cuda.is_available()}"
    )


class AverageMeter:
    def __init__(self, ema=False):
        self.ema = ema
        self.reset()

    def reset(self):
        self.val = self.avg = self.sum = 0.0
        self.count = 0

    def update(self, val, n=1):
        if isinstance(val, torch.Tensor):
            val = val.item()
        self.val = val
        self.sum += val * n
        self.count += n
        self.avg = (0.9 * self.avg + 0.1 * val) if self.ema and self.count > n else self.sum / self.count


class MetricMeter:
    def __init__(self, delimiter=" "):
        self.meters = defaultdict(AverageMeter)
        self.delimiter = delimiter

    def update(self, input_dict):
        if input_dict is None:
            return
        if not isinstance(input_dict, dict):
            raise TypeError("Input to MetricMeter.update() must be a dictionary")
        for k, v in input_dict.items():
            self.meters[k].update(v)

    def __str__(self):
        return self.delimiter.join(f"{name} {m.val:.4f} ({m.avg:.4f})" for name, m in self.meters.items())
