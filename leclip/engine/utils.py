"""Small utilities with Dassl's names (seeding, logging to log.txt, meters) plus the RNG
state helpers that make a resumed run equal an uninterrupted one."""
import logging
import os
import platform
import random
import sys
from collections import defaultdict

import numpy as np
import PIL
import torch


def set_random_seed(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def get_rng_state():
    """Every global RNG state (Python, numpy, torch CPU and CUDA), for checkpoints, as
    tensors, numbers and lists only: `torch.load(weights_only=True)` reads it back."""
    numpy_state = np.random.get_state(legacy=False)
    return {
        "python": random.getstate(),
        "numpy": {
            "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
            "pos": int(numpy_state["state"]["pos"]),
            "has_gauss": int(numpy_state["has_gauss"]),
            "gauss": float(numpy_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state):
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    saved = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": "MT19937",
            "state": {"key": saved["key"].numpy().astype(np.uint32), "pos": saved["pos"]},
            "has_gauss": saved["has_gauss"],
            "gauss": saved["gauss"],
        }
    )
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def mkdir_if_missing(dirname):
    os.makedirs(dirname, exist_ok=True)


class _Tee:
    """stdout that also appends to a log file, as Dassl's Logger does."""

    def __init__(self, console, path):
        self.console = console
        self.path = path
        self.file = open(path, "a", buffering=1)  # line by line: a killed run keeps its log

    def write(self, msg):
        self.console.write(msg)
        if not self.file.closed:  # a replaced tee that someone restored still prints
            self.file.write(msg)

    def flush(self):
        self.console.flush()
        if not self.file.closed:
            self.file.flush()

    def isatty(self):
        return False

    def __getattr__(self, name):
        return getattr(self.console, name)


_LOG_HANDLER_FLAG = "_leclip_log_txt"


def setup_logger(output=None):
    """Tee stdout into `output/log.txt` (or into `output` itself when it ends in .txt or
    .log) and send the `leclip` logger there too.

    Unlike Dassl, an existing log is appended to, so a resumed run keeps one log.txt.
    A second call replaces the first: no line is ever written twice.
    """
    if not output:
        return
    fpath = output if output.endswith((".txt", ".log")) else os.path.join(output, "log.txt")
    mkdir_if_missing(os.path.dirname(fpath) or ".")
    console = sys.stdout
    if isinstance(console, _Tee):
        console.file.close()
        console = console.console
    sys.stdout = _Tee(console, fpath)

    logger = logging.getLogger("leclip")
    for handler in [h for h in logger.handlers if getattr(h, _LOG_HANDLER_FLAG, False)]:
        logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    setattr(handler, _LOG_HANDLER_FLAG, True)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def count_num_param(model=None, params=None):
    if params is not None:
        return sum(p.numel() for p in params)
    return sum(p.numel() for p in model.parameters())


def collect_env_info():
    cuda = torch.version.cuda if torch.cuda.is_available() else "not available"
    return (
        f"Python {platform.python_version()}, torch {torch.__version__} (CUDA {cuda}), "
        f"numpy {np.__version__}, Pillow {PIL.__version__}, {platform.platform()}"
    )


class AverageMeter:
    """Current value and running (or exponential moving) average."""

    def __init__(self, ema=False):
        self.ema = ema
        self.reset()

    def reset(self):
        self.val = 0
        self.avg = 0
        self.sum = 0
        self.count = 0

    def update(self, val, n=1):
        if isinstance(val, torch.Tensor):
            val = val.item()
        self.val = val
        self.sum += val * n
        self.count += n
        self.avg = self.avg * 0.9 + val * 0.1 if self.ema else self.sum / self.count


class MetricMeter:
    """A named set of AverageMeters, printed as `name val (avg)`."""

    def __init__(self, delimiter=" "):
        self.meters = defaultdict(AverageMeter)
        self.delimiter = delimiter

    def update(self, input_dict):
        if input_dict is None:
            return
        if not isinstance(input_dict, dict):
            raise TypeError(f"MetricMeter.update() takes a dict of losses, got {type(input_dict).__name__}")
        for name, value in input_dict.items():
            self.meters[name].update(value)

    def __str__(self):
        return self.delimiter.join(f"{name} {m.val:.4f} ({m.avg:.4f})" for name, m in self.meters.items())
