"""Fixes for Dassl.pytorch on current torch and numpy, applied by `leclip.dassl`.

Each fix first checks, on the installed Dassl, torch and numpy, that its breakage is
there, and patches only then: on a Dassl (or torch) without the breakage it does
nothing, and a second `patch()` finds nothing left to fix. `LECLIP_DASSL_FIXES`
chooses them: unset or `all` (every fix that is needed), `none`, or a comma-separated
list of the names below.

- `warmup_verbose` (dassl/optim/lr_scheduler.py): `_BaseWarmupScheduler.__init__`
  passes `verbose` to torch's LRScheduler constructor, which no longer takes it: every
  config with OPTIM.WARMUP_EPOCH > 0 fails with a TypeError when the scheduler is
  built. The fix replaces that constructor with one that does not pass `verbose`.
- `warmup_resume` (dassl/optim/lr_scheduler.py): the warm-up scheduler's state holds its
  successor scheduler object, so a resumed one takes the saved successor, a copy bound to
  a copy of the optimizer: after the warm-up its learning rates go to that copy, and the
  real optimizer keeps the last one. A resumed run then trains with other learning rates
  than an uninterrupted one. The fix keeps the scheduler's own successor and loads the
  saved one's position (its state dict) into it.
- `checkpoint_load` (dassl/utils/torchtools.py): `load_checkpoint` calls `torch.load`
  without `weights_only`, which defaults to True since torch 2.6 and refuses Dassl's
  own checkpoints (a warm-up scheduler's state holds its successor scheduler object,
  and that one the optimizer object), so resuming and `--eval-only` fail. The fix
  reads with `weights_only=True` and allow-lists exactly the classes such a checkpoint
  holds (Dassl's successor schedulers and optimizers, and their `defaultdict(dict)`
  state, read as a dict), for the loads of that module only: nothing else in the
  process loads unsafely. It is also applied when Dassl's loader would read any
  pickled object (a Dassl that passes `weights_only=False`, or an old torch).
- `checkpoint_messages` (dassl/utils/torchtools.py): `load_checkpoint` of an empty,
  text, truncated or corrupt file, or of one that holds other objects (refused), stops
  with torch's error, which names neither the file nor what to do. The fix gives
  LE-CLIP's one message instead (a ValueError naming the file and the fix), for the
  loads of that module only; the files read are the same.
- `np_int` (dassl/data/transforms/randaugment.py and autoaugment.py): `np.int`, removed
  in numpy 1.24, is used by RandAugment and AutoAugment ops; the fix defines it as `int`.
- `logger_console` (dassl/utils/logger.py): `Logger.close`, which also runs when a
  Logger is garbage-collected, closes the console it wraps (`sys.stdout` when the
  logger was set up). A process that restores `sys.stdout` after a run (a test suite, a
  notebook, a sweep in one process) then writes to a closed file ("I/O operation on
  closed file"). The fix makes `close` close the log file only.
- `resume_without_models` (dassl/engine/trainer.py): `resume_model_if_exist` of a
  trainer that registered no model (zero-shot CLIP learns nothing) reads an unset local
  and fails with UnboundLocalError, so such a trainer cannot `train()` (its test runs
  after training). The fix returns epoch 0 for it, printing Dassl's "No checkpoint found".
- `resume_messages` (dassl/utils/torchtools.py): `resume_from_checkpoint` (which
  TrainerBase's `resume_model_if_exist` calls) stops with an IndexError on an empty
  `checkpoint` marker and with load_state_dict's RuntimeError when the config changed
  the model's shapes. The fix puts LE-CLIP's resume in its place (in dassl.engine.trainer,
  dassl.utils and torchtools): the same steps and lines, each file read by Dassl's
  `load_checkpoint`, and one message (a ValueError) for each of these.
- `logging_disabled` (dassl/data/datasets/dg/wilds/wilds_base.py): importing Dassl calls
  `logging.disable(logging.WARNING)`, which silences every logger of the process below
  WARNING, LE-CLIP's included. The fix lifts that process-wide switch again
  (`logging.disable(logging.NOTSET)`); loggers keep their own levels.
- `load_model_val_result` (dassl/engine/trainer.py): `load_model` prints the checkpoint's
  `val_result` with a float format, but every checkpoint saved without a validation
  result (the one per epoch, `model.pth.tar-<epoch>`) holds None there, so
  `--eval-only --load-epoch N` fails with "unsupported format string passed to
  NoneType.__format__" for any trainer that keeps Dassl's `load_model` (LE-CLIP's
  included). The fix hands `load_model` NaN in place of that None (it prints
  `val_result=nan`); the file is not changed.
"""
import collections
import contextlib
import copy
import fractions
import importlib.util
import io
import logging
import os
import re
import sys
import tempfile
import types

import numpy as np
import torch
from torch.optim.lr_scheduler import LRScheduler

from .engine import checkpoint as engine_checkpoint

ENV = "LECLIP_DASSL_FIXES"


def _warmup_init(self, optimizer, successor, warmup_epoch, last_epoch=-1, verbose=False):
    """Dassl's _BaseWarmupScheduler.__init__ without handing `verbose` to torch."""
    self.successor = successor
    self.warmup_epoch = warmup_epoch
    LRScheduler.__init__(self, optimizer, last_epoch)


def _warmup_load_state_dict(self, state_dict):
    """Dassl's _BaseWarmupScheduler.load_state_dict that keeps its own successor (bound
    to its optimizer) and moves it to where the saved one was."""
    state = dict(state_dict)
    saved = state.pop("successor", None)
    LRScheduler.load_state_dict(self, state)
    if saved is not None:
        self.successor.load_state_dict(saved.state_dict())


def _state_as_dict(default_factory=None):
    """Stands in for `collections.defaultdict` when a Dassl checkpoint is read: torch's
    safe loader fills dicts only. It rebuilds the optimizer state inside the pickled
    successor scheduler, a copy whose position only is used (`warmup_resume`)."""
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


class _TorchAsTorchtoolsSeesIt(types.ModuleType):
    """`torch` as Dassl's torchtools module sees it: `base` (torch, or the one another
    fix put there), except for `load`. Every caller of Dassl's load_checkpoint (trainers,
    load_pretrained_weights, resume_from_checkpoint, forks that imported it early)
    resolves `torch` in that module, so this reaches them all and nothing else."""

    def __init__(self, base):
        super().__init__("torch")
        self.base = base

    def __getattr__(self, name):
        return getattr(self.base, name)


class _TorchLoadingDasslCheckpoints(_TorchAsTorchtoolsSeesIt):
    """`load` reads with weights_only=True and Dassl's checkpoint classes allowed."""

    def load(self, f, *args, **kwargs):
        kwargs["weights_only"] = True
        with torch.serialization.safe_globals(dassl_checkpoint_classes()):
            return self.base.load(f, *args, **kwargs)


class _TorchNamingBadCheckpoints(_TorchAsTorchtoolsSeesIt):
    """`load` of a file that is empty, text, truncated, corrupt or holds other objects
    raises LE-CLIP's one message (a CheckpointError naming the file and the fix)."""

    def load(self, f, *args, **kwargs):
        if not isinstance(f, (str, os.PathLike)):  # an open file: nothing to name
            return self.base.load(f, *args, **kwargs)
        path = os.fspath(f)
        if _CHECKPOINT_NAME.fullmatch(os.path.basename(path)):
            what, fix = "Checkpoint", engine_checkpoint.checkpoint_fix(path)
        else:  # e.g. MODEL.INIT_WEIGHTS through load_pretrained_weights
            what, fix = "File", "give a file saved with torch.save"
        return engine_checkpoint.read_torch_file(
            path, what, fix, load=lambda _: self.base.load(f, *args, **kwargs),
            allowed="tensors, numbers and the schedulers and optimizers a Dassl checkpoint holds",
        )


_CHECKPOINT_NAME = re.compile(r"model\.pth\.tar-\d+|model-best\.pth\.tar")


# ---------------------------------------------------------------- the fixes
def _warmup_class():
    import dassl.optim.lr_scheduler as lr_scheduler

    return getattr(lr_scheduler, "_BaseWarmupScheduler", None)


def _warmup_verbose_needed():
    warmup = _warmup_class()
    if warmup is None:
        return False

    class Probe(warmup):
        def get_lr(self):
            return [group["lr"] for group in self.optimizer.param_groups]

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    try:
        Probe(optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, 1), 1)
    except TypeError:
        return True
    return False


def _warmup_verbose_apply():
    _warmup_class().__init__ = _warmup_init


def _warmup_resume_needed():
    warmup = _warmup_class()
    if warmup is None:
        return False
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    successor = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, 2)
    probe = warmup.__new__(warmup)  # its constructor is what warmup_verbose fixes
    probe.optimizer, probe.successor, probe.last_epoch = optimizer, successor, 0
    # what a checkpoint gives back: a copy of the successor, with a copy of the optimizer
    warmup.load_state_dict(probe, {"successor": copy.deepcopy(successor), "last_epoch": 1})
    return probe.successor.optimizer is not optimizer


def _warmup_resume_apply():
    _warmup_class().load_state_dict = _warmup_load_state_dict


def _loads(load_checkpoint, payload):
    """Whether Dassl's `load_checkpoint` reads `payload` back from a file (its "Unable
    to load" line is swallowed)."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "probe.pth")
        torch.save(payload, path)
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                load_checkpoint(path)
        except Exception:  # noqa: BLE001  torch raises UnpicklingError (RuntimeError in older versions)
            return False
    return True


def _checkpoint_load_needed():
    """Needed when Dassl's `load_checkpoint` refuses what its own checkpoints hold (a
    scheduler object with its optimizer), or reads an object no checkpoint holds (it
    would unpickle anything, code included)."""
    import dassl.utils.torchtools as torchtools

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    dassl_own = {"scheduler": {"successor": torch.optim.lr_scheduler.StepLR(optimizer, 1)}}
    foreign = {"state_dict": fractions.Fraction(1, 3)}
    return not _loads(torchtools.load_checkpoint, dassl_own) or _loads(torchtools.load_checkpoint, foreign)


def _checkpoint_load_apply():
    import dassl.utils.torchtools as torchtools

    torchtools.torch = _TorchLoadingDasslCheckpoints(torchtools.torch)


def _names_the_file(call, path):
    """Whether `call()` fails with one message that names `path` (a ValueError, which
    LE-CLIP's train.py reports without a traceback)."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            call()
    except ValueError as err:
        return path in str(err)
    except Exception:  # noqa: BLE001  whatever else Dassl raises is the breakage
        pass
    return False


def _checkpoint_messages_needed():
    """Needed when Dassl's `load_checkpoint` of a truncated checkpoint stops with torch's
    error, which names neither the file nor what to do."""
    import dassl.utils.torchtools as torchtools

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.pth.tar-1")
        torch.save({"state_dict": {"w": torch.zeros(4)}, "epoch": 1}, path)
        with open(path, "r+b") as f:
            f.truncate(100)
        return not _names_the_file(lambda: torchtools.load_checkpoint(path), path)


def _checkpoint_messages_apply():
    import dassl.utils.torchtools as torchtools

    torchtools.torch = _TorchNamingBadCheckpoints(torchtools.torch)


def _np_int_needed():
    """Needed when numpy has no `np.int` and Dassl's transforms use it."""
    if "int" in np.__dict__:
        return False
    for module in ("dassl.data.transforms.randaugment", "dassl.data.transforms.autoaugment"):
        try:
            spec = importlib.util.find_spec(module)
        except ImportError:  # a Dassl without its transforms package
            spec = None
        if spec is not None and spec.origin and os.path.isfile(spec.origin):
            with open(spec.origin) as f:
                if re.search(r"\bnp\.int(?!\w)", f.read()):
                    return True
    return False


def _np_int_apply():
    np.int = int


def _logger_class():
    try:
        from dassl.utils.logger import Logger
    except ImportError:  # a Dassl without its logger module
        return None
    return Logger


class _Console:
    closed_by_logger = False

    def close(self):
        self.closed_by_logger = True

    def write(self, msg):
        pass

    def flush(self):
        pass


def _logger_console_needed():
    logger = _logger_class()
    if logger is None:
        return False
    probe = logger.__new__(logger)
    probe.console, probe.file = _Console(), io.StringIO()
    logger.close(probe)
    return probe.console.closed_by_logger


def _close_log_file_only(self):
    """Dassl's Logger.close without closing the console it wraps."""
    log_file = getattr(self, "file", None)  # None when its constructor failed
    if log_file is not None and not log_file.closed:
        log_file.close()


def _logger_console_apply():
    _logger_class().close = _close_log_file_only


def _trainer_base():
    from dassl.engine.trainer import TrainerBase

    return TrainerBase


def _resume_without_models_needed():
    base = _trainer_base()
    probe = base.__new__(base)
    probe._models, probe._optims, probe._scheds = collections.OrderedDict(), {}, {}
    with tempfile.TemporaryDirectory() as folder, contextlib.redirect_stdout(io.StringIO()):
        try:
            base.resume_model_if_exist(probe, folder)
        except UnboundLocalError:
            return True
    return False


def _resume_without_models_apply():
    base = _trainer_base()
    resume = base.resume_model_if_exist

    def resume_model_if_exist(self, directory):
        if not self.get_model_names():
            print("No checkpoint found, train from scratch")
            return 0
        return resume(self, directory)

    base.resume_model_if_exist = resume_model_if_exist


def _resume_from_checkpoint(fdir, model, optimizer=None, scheduler=None):
    """Dassl's `resume_from_checkpoint` as LE-CLIP's: the same steps and lines, each
    file read by Dassl's `load_checkpoint`, with one message for an empty marker and
    for a model or optimizer that the checkpoint does not fit."""
    import dassl.utils.torchtools as torchtools

    return engine_checkpoint.resume_from_checkpoint(
        fdir, model, optimizer, scheduler, read=lambda path: torchtools.load_checkpoint(path)
    )


def _resume_modules():
    """The modules whose `resume_from_checkpoint` Dassl's code calls: TrainerBase's, and
    where a fork imports it from."""
    import dassl.engine.trainer as trainer_module
    import dassl.utils as utils
    import dassl.utils.torchtools as torchtools

    return [module for module in (trainer_module, utils, torchtools) if hasattr(module, "resume_from_checkpoint")]


def _resume_messages_needed():
    """Needed when Dassl's resume (the one TrainerBase calls) stops with a bare error on an
    empty `checkpoint` marker (IndexError) or on a model the checkpoint does not fit
    (RuntimeError), naming neither the file nor the fix."""
    modules = _resume_modules()
    if not modules:
        return False
    resume = modules[0].resume_from_checkpoint
    with tempfile.TemporaryDirectory() as empty, tempfile.TemporaryDirectory() as other:
        open(os.path.join(empty, engine_checkpoint.MARKER), "w").close()
        saved = os.path.join(other, "model.pth.tar-1")
        torch.save({"state_dict": torch.nn.Linear(1, 1).state_dict(), "epoch": 1}, saved)
        with open(os.path.join(other, engine_checkpoint.MARKER), "w") as f:
            f.write("model.pth.tar-1\n")
        marker_named = _names_the_file(lambda: resume(empty, torch.nn.Linear(1, 1)), empty)
        shape_named = _names_the_file(lambda: resume(other, torch.nn.Linear(2, 1)), other)
    return not (marker_named and shape_named)


def _resume_messages_apply():
    for module in _resume_modules():
        module.resume_from_checkpoint = _resume_from_checkpoint


def _logging_disabled_needed():
    """Needed when logging is switched off process-wide and Dassl's wilds module, which
    does that at import, is loaded."""
    module = sys.modules.get("dassl.data.datasets.dg.wilds.wilds_base")
    if module is None or logging.root.manager.disable < logging.INFO:
        return False
    with open(module.__file__) as f:
        return "logging.disable(" in f.read()


def _logging_disabled_apply():
    logging.disable(logging.NOTSET)


def _load_model_val_result_needed():
    base = _trainer_base()
    probe = base.__new__(base)
    probe._models = collections.OrderedDict(probe=torch.nn.Linear(1, 1))
    probe._optims, probe._scheds = {"probe": None}, {"probe": None}
    with tempfile.TemporaryDirectory() as folder, contextlib.redirect_stdout(io.StringIO()):
        os.makedirs(os.path.join(folder, "probe"))
        checkpoint = {"state_dict": probe._models["probe"].state_dict(), "epoch": 1, "val_result": None}
        torch.save(checkpoint, os.path.join(folder, "probe", "model.pth.tar-1"))
        try:
            base.load_model(probe, folder, epoch=1)
        except TypeError:
            return True
    return False


def _load_model_val_result_apply():
    import dassl.engine.trainer as trainer_module

    load_model = trainer_module.TrainerBase.load_model

    def load_model_without_val_result(self, directory, epoch=None):
        read = trainer_module.load_checkpoint

        def read_with_val_result(path):
            checkpoint = read(path)
            if checkpoint.get("val_result") is None:
                checkpoint["val_result"] = float("nan")
            return checkpoint

        # load_model reads through this module's name, for the length of the call only
        trainer_module.load_checkpoint = read_with_val_result
        try:
            return load_model(self, directory, epoch)
        finally:
            trainer_module.load_checkpoint = read

    trainer_module.TrainerBase.load_model = load_model_without_val_result


Fix = collections.namedtuple("Fix", "needed apply")
FIXES = collections.OrderedDict(
    warmup_verbose=Fix(_warmup_verbose_needed, _warmup_verbose_apply),
    warmup_resume=Fix(_warmup_resume_needed, _warmup_resume_apply),
    checkpoint_load=Fix(_checkpoint_load_needed, _checkpoint_load_apply),
    checkpoint_messages=Fix(_checkpoint_messages_needed, _checkpoint_messages_apply),
    np_int=Fix(_np_int_needed, _np_int_apply),
    logger_console=Fix(_logger_console_needed, _logger_console_apply),
    resume_without_models=Fix(_resume_without_models_needed, _resume_without_models_apply),
    resume_messages=Fix(_resume_messages_needed, _resume_messages_apply),
    logging_disabled=Fix(_logging_disabled_needed, _logging_disabled_apply),
    load_model_val_result=Fix(_load_model_val_result_needed, _load_model_val_result_apply),
)


def selected_fixes(value=None):
    """The fix names that LECLIP_DASSL_FIXES (or `value`) selects."""
    value = os.environ.get(ENV, "") if value is None else value
    value = value.strip().lower()
    if value in ("", "all"):
        return list(FIXES)
    if value == "none":
        return []
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in FIXES]
    if unknown:
        raise ValueError(
            f"{ENV}={value!r}: unknown fix {', '.join(unknown)}; use all, none or a comma-separated list of "
            f"{', '.join(FIXES)}"
        )
    return names


def patch(names=None):
    """Apply each selected fix whose breakage is present; returns the names applied
    (empty when nothing needed fixing, e.g. on a second call)."""
    names = selected_fixes() if names is None else names
    applied = []
    for name in names:
        fix = FIXES[name]
        if fix.needed():
            fix.apply()
            applied.append(name)
    return applied


def needed():
    """The fixes whose breakage is present now (none once `patch()` ran)."""
    return [name for name, fix in FIXES.items() if fix.needed()]


# ---------------------------------------------------------------- trainer state on Dassl
# Not fixes: Dassl's save_model and resume_model_if_exist carry weights, optimizer and
# scheduler only. LE-CLIP's trainers (CLIPTrainer) call them through these, so that their
# `trainer_state()` is saved inside each epoch checkpoint and given back on resume, as on
# the built-in engine.
def save_with_trainer_state(trainer, save_model, *args):
    """`save_model(*args)` (Dassl's), each checkpoint it writes holding
    `trainer.trainer_state()` under "trainer_state"."""
    import dassl.engine.trainer as trainer_module

    save = trainer_module.save_checkpoint
    state = trainer.trainer_state()

    def save_with_state(checkpoint, *rest, **kwargs):
        return save({**checkpoint, "trainer_state": state}, *rest, **kwargs)

    # save_model writes through this module's name, for the length of the call only
    trainer_module.save_checkpoint = save_with_state
    try:
        return save_model(*args)
    finally:
        trainer_module.save_checkpoint = save


def resume_with_trainer_state(trainer, resume_model_if_exist, directory):
    """`resume_model_if_exist(directory)` (Dassl's), then `trainer.load_trainer_state` of
    the state inside the checkpoint it resumed from (Dassl reads every checkpoint through
    torchtools' load_checkpoint, which is watched for the length of the call)."""
    import dassl.utils.torchtools as torchtools

    read, seen = torchtools.load_checkpoint, []

    def read_and_keep(path, *args, **kwargs):
        checkpoint = read(path, *args, **kwargs)
        seen.append(checkpoint)
        return checkpoint

    torchtools.load_checkpoint = read_and_keep
    try:
        start_epoch = resume_model_if_exist(directory)
    finally:
        torchtools.load_checkpoint = read
    states = [checkpoint.get("trainer_state") for checkpoint in seen]
    if start_epoch and states and states[-1] is not None:
        trainer.load_trainer_state(states[-1])
    return start_epoch
