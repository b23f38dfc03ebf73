"""One run, as `train.py` makes it: the safety rules, results.json and the messages.

Safety rules of a run (`run`): one run per output folder at a time (a lock file naming
its holder); a finished `results.json` is never overwritten (`--overwrite` keeps it
beside the new one); a run resumes only from checkpoints written with the same config
(`--force-resume` overrides); results and config are written atomically; undefined
metrics are JSON null. results.json keeps every metric the trainer reports, the
overrides of its recipe (`recipe_followed`), and the run's whole time over resumes.
"""
import contextlib
import glob
import json
import math
import os
import os.path as osp
import signal
import socket
import sys
import tempfile
import time
from collections import OrderedDict

from .catalogue import HarnessError
from .files import write_text_atomic

RESULTS = "results.json"
CONFIG = "config.yaml"
VIZ_FOLDER = "viz"  # train.py --viz: the trainer's figures, in the run's folder
LOCK = "run.lock"
ELAPSED = "elapsed.json"  # the seconds of the sessions before a resume; gone once results.json is written
# config keys that do not change what a run computes: a resume (and a finished seed's skip) may change them
RESUME_MAY_CHANGE = (
    "OUTPUT_DIR", "RESUME", "DATASET.ROOT", "VERBOSE", "TRAIN.PRINT_FREQ", "TRAIN.CHECKPOINT_FREQ",
    "DATALOADER.NUM_WORKERS", "TRAINER.VIZ_IMAGES", "TRAIN.KEEP_EVERY_CHECKPOINT",
)
# what results.json says of a run beside the metrics its trainer reports
RUN_FIELDS = ("trainer", "dataset", "seed", "ssl_mode", "backbone", "engine", "device", "processes", "seconds",
              "overrides", "recipe_followed", "skipped_images")
# keys that choose the setting (not a departure from the recipe)
SETTING_KEYS = ("DATASET.NUM_LABELED", "DATASET.LABELED_RATIO", "DATASET.SETTING")


class RunStopped(KeyboardInterrupt):
    """SIGINT or SIGTERM reached a run; the last epoch checkpoint (if any) is kept."""

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum


# ---------------------------------------------------------------- results files
def write_json_atomic(path, data):
    write_text_atomic(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


def metric_value(value):
    """A metric for results.json: a float, or None (JSON null) when it is undefined;
    lists and dicts (per-class results) value by value."""
    if isinstance(value, dict):
        return {str(k): metric_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [metric_value(v) for v in value]
    value = float(value)
    return value if math.isfinite(value) else None


def read_result(path):
    """(results dict, None) of a finished run's results.json, or (None, why) when the
    file is missing, empty or not a finished run's results."""
    if not osp.exists(path):
        return None, "missing"
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError) as err:
        return None, f"unreadable ({err})" if osp.getsize(path) else "empty"
    if not isinstance(data, dict):
        return None, "not a JSON object of results"
    return data, None


def keep_aside(path, why, ext=".json"):
    """Rename `path` (ending in `ext`) to <stem>.<why>-<time><ext> beside it; returns the new name."""
    stem = path[: -len(ext)] if ext and path.endswith(ext) else path
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = f"{stem}.{why}-{stamp}{ext}"
    k = 1
    while osp.exists(target):
        k += 1
        target = f"{stem}.{why}-{stamp}-{k}{ext}"
    os.replace(path, target)
    return target


def has_checkpoints(folder):
    return bool(glob.glob(osp.join(folder, "*", "checkpoint")))


class RunLock:
    """An exclusive lock on an output folder (`run.lock`, naming its holder), so that two
    runs never write one folder at once. The lock is an OS file lock: it ends with the
    process that holds it, however that process ends."""

    def __init__(self, folder):
        self.path = osp.join(folder, LOCK)
        self.file = None

    def __enter__(self):
        import fcntl

        while True:
            handle = open(self.path, "a+")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                handle.close()
                raise HarnessError(
                    f"{osp.dirname(self.path)} is in use by another run ({holder}): two runs of one method, "
                    "dataset, setting and seed cannot write one folder. Wait for it to finish or stop it"
                ) from None
            # the holder before us may have removed the file it locked: lock the one on disk
            if osp.exists(self.path) and os.stat(self.path).st_ino == os.fstat(handle.fileno()).st_ino:
                break
            handle.close()
        handle.seek(0)
        handle.truncate()
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {started}: {' '.join(sys.argv)}\n")
        handle.flush()
        self.file = handle
        return self

    def __exit__(self, *exc):
        os.remove(self.path)
        self.file.close()  # closing releases the OS lock


# ---------------------------------------------------------------- configs compared
def flat(node, prefix=""):
    """{"A.B.C": value} of a config node (tuples as lists)."""
    out = {}
    for key, value in node.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat(value, dotted + "."))
        else:
            out[dotted] = list(value) if isinstance(value, tuple) else value
    return out


def _flat_of(config):
    from yacs.config import CfgNode

    return flat(CfgNode.load_cfg(config if isinstance(config, str) else config.dump()))


def config_changes(before, now, ignore=RESUME_MAY_CHANGE):
    """['KEY: before -> now', ...] for every key outside `ignore` whose value differs
    between two configs (a config node, or a saved config.yaml's text)."""
    before, now = _flat_of(before), _flat_of(now)
    missing = object()
    changes = []
    for key in sorted(set(before) | set(now)):
        if key in ignore:
            continue
        old, new = before.get(key, missing), now.get(key, missing)
        if old != new:
            show = lambda v: "(absent)" if v is missing else repr(v)  # noqa: E731
            changes.append(f"{key}: {show(old)} -> {show(new)}")
    return changes


def recipe_overrides(recipe, cfg):
    """{key: value} of `cfg` where it departs from `recipe` (the config its files make),
    leaving out the setting and the keys that do not change what a run computes."""
    before, now = _flat_of(recipe), _flat_of(cfg)
    ignored = set(RESUME_MAY_CHANGE) | set(SETTING_KEYS)
    return OrderedDict((k, now[k]) for k in sorted(now) if k not in ignored and before.get(k) != now[k])


def check_resume(cfg, force_resume):
    """Refuse to resume from checkpoints written with another config (unless forced).
    Returns the lines to log: a warning, or the changed keys of a forced resume."""
    folder = cfg.RESUME or cfg.OUTPUT_DIR
    if not has_checkpoints(folder):
        return []
    saved = osp.join(folder, CONFIG)
    if not osp.exists(saved):
        return [f"Warning: {folder} holds checkpoints but no {CONFIG}: the resume cannot check the config"]
    with open(saved) as f:
        changes = config_changes(f.read(), cfg)
    if not changes:
        return []
    listed = "\n  ".join(changes)
    if force_resume:
        kept = keep_aside(saved, "before-resume", ".yaml") if folder == cfg.OUTPUT_DIR else saved
        return [f"Resuming from {folder} with a changed config (--force-resume; the config of its checkpoints is "
                f"{kept}):\n  {listed}"]
    raise HarnessError(
        f"{folder} holds checkpoints of a run with another config; resuming would mix the two. Changed keys:\n"
        f"  {listed}\nRerun with the saved config ({saved}), choose another output folder, or pass --force-resume "
        "to resume anyway"
    )


# ---------------------------------------------------------------- the run
def _output_folder(path):
    try:
        os.makedirs(path, exist_ok=True)
        probe = tempfile.TemporaryFile(dir=path)
        probe.close()
    except OSError as err:
        raise HarnessError(
            f"Cannot write the output folder {path} ({err.strerror or err}): choose a writable folder with "
            "--output-dir (OUTPUT=... for scripts/run.sh)"
        ) from None


def earlier_seconds(folder):
    """The seconds of the earlier sessions of a run that resumes (0 when it starts afresh)."""
    data, _ = read_result(osp.join(folder, ELAPSED))
    if data is None or not has_checkpoints(folder):
        return 0.0
    return float(data.get("seconds", 0.0))


def run(cfg, eval_only=False, model_dir="", load_epoch=None, overwrite=False, force_resume=False, viz=False,
        recipe=None):
    """Train (or evaluate) one configured run; write config.yaml and results.json; with
    `viz` (train.py --viz) then the trainer's figures (`visualize`) into OUTPUT_DIR/viz.
    `recipe`: the config the run's files make without its overrides (results.json
    records the overrides, and whether there were none).

    A finished results.json in OUTPUT_DIR is refused, or with `overwrite` kept beside the
    new one as results.replaced-<time>.json; checkpoints of another config are refused
    unless `force_resume`. In a distributed run rank 0 alone takes the lock, makes these
    checks and writes the folder's files; the other ranks train beside it (and stop with
    its error when a check fails)."""
    from leclip import distributed

    results_path = osp.join(cfg.OUTPUT_DIR, RESULTS)
    with contextlib.ExitStack() as held:

        def prepare():
            _output_folder(cfg.OUTPUT_DIR)
            held.enter_context(RunLock(cfg.OUTPUT_DIR))
            finished, why = read_result(results_path)
            if finished is not None and not overwrite:
                raise HarnessError(
                    f"{results_path} holds a finished run ({finished.get('trainer')}, seed {finished.get('seed')}): "
                    "it is never overwritten. Choose another output folder, or pass --overwrite to keep it as "
                    "results.replaced-<time>.json beside the new one"
                )
            return finished, [] if eval_only else check_resume(cfg, force_resume)

        finished, notes = distributed.on_main(prepare)
        return _run_locked(cfg, eval_only, model_dir, load_epoch, results_path, finished, notes, viz, recipe)


@contextlib.contextmanager
def _timed(folder, main):
    """Yields a clock of the run's whole time: this session's seconds plus those of the
    sessions it resumes, each of which, stopped by a signal, left its time in ELAPSED."""
    earlier = earlier_seconds(folder) if main else 0.0
    start = time.time()
    try:
        yield lambda: earlier + time.time() - start
    except RunStopped:
        if main:
            write_json_atomic(osp.join(folder, ELAPSED), {"seconds": round(earlier + time.time() - start, 1)})
        raise


def _results(cfg, trainer, processes, seconds, recipe):
    from leclip.dassl import ENGINE

    metrics = getattr(trainer.evaluator, "last_results", {})
    results = OrderedDict((k, metric_value(v)) for k, v in metrics.items())
    results.update(
        trainer=cfg.TRAINER.NAME,
        dataset=cfg.DATASET.NAME,
        seed=cfg.SEED,
        ssl_mode=cfg.TRAINER.SSL.MODE,
        backbone=cfg.MODEL.BACKBONE.NAME,
        engine=ENGINE,
        device=str(trainer.device),
        processes=processes,
        seconds=round(seconds, 1),
    )
    if recipe is not None:
        overrides = recipe_overrides(recipe, cfg)
        results.update(overrides=overrides, recipe_followed=not overrides)
    skipped = getattr(getattr(trainer, "dm", None), "skipped_images", None)
    if skipped is not None:
        results["skipped_images"] = len(skipped)
    return results


def _run_locked(cfg, eval_only, model_dir, load_epoch, results_path, finished, notes, viz, recipe):
    from leclip import distributed
    from leclip.dassl import ENGINE, build_trainer, collect_env_info, set_random_seed
    from leclip.engine.utils import setup_logger

    main = distributed.is_main()
    if cfg.SEED >= 0:
        set_random_seed(cfg.SEED)
    # LE-CLIP's log on either engine: one log.txt per run folder, appended to on resume and
    # written line by line (Dassl's starts a log.txt-<time> beside an existing one)
    if main:
        setup_logger(cfg.OUTPUT_DIR)
    processes = distributed.world_size()
    shown = f" | {processes} processes ({distributed.backend_name()})" if processes > 1 else ""
    print(f"Engine: {ENGINE} | {collect_env_info()}{shown}")
    for note in notes:
        print(note)
    if main:
        write_text_atomic(osp.join(cfg.OUTPUT_DIR, CONFIG), cfg.dump())
    with _timed(cfg.OUTPUT_DIR, main and not eval_only) as clock:
        trainer = build_trainer(cfg)
        if eval_only:
            trainer.load_model(model_dir, epoch=load_epoch)
            trainer.test()
        else:
            trainer.train()
        results = _results(cfg, trainer, processes, clock(), recipe)
    if main:
        if osp.exists(results_path):  # a finished run (--overwrite) or an unreadable file: kept beside
            kept = keep_aside(results_path, "replaced" if finished is not None else "unreadable")
            print(f"The earlier {RESULTS} is kept as {kept}")
        # written after the run: a seed folder with results.json is a finished run
        write_json_atomic(results_path, results)
        with contextlib.suppress(FileNotFoundError):
            os.remove(osp.join(cfg.OUTPUT_DIR, ELAPSED))  # its time is in results.json now
    if viz:  # after results.json: a figure that fails leaves the finished run intact
        trainer.visualize(osp.join(cfg.OUTPUT_DIR, VIZ_FOLDER))
    sys.stdout.flush()
    return results


# ---------------------------------------------------------------- errors and signals
def user_message(err, cfg=None):
    """The one-line message for a bad-input error (no traceback)."""
    if isinstance(err, KeyError) and err.args:
        message = str(err.args[0])
    else:
        message = str(err)
    if "Original Traceback" in message:  # raised in a DataLoader worker: its last line is the error
        last = [line for line in message.splitlines() if line.strip()][-1]
        message = last.split(": ", 1)[1] if ": " in last else last
    if isinstance(err, OSError) and err.filename and err.strerror:
        message = f"{err.strerror}: {err.filename}"
        if cfg is not None and str(err.filename).startswith(osp.abspath(cfg.DATASET.ROOT or "data")):
            message += (" (the data folder must be writable: the embedded world is rendered there and splits are "
                        "cached there; choose another with --root, or DATA=... for scripts/run.sh)")
        elif isinstance(err, (PermissionError, NotADirectoryError, FileExistsError, IsADirectoryError)):
            message += " (choose a folder you can write)"
    return message


def stop_message(signum, folder):
    """What a stopped run says: the checkpoint it keeps, or that it has none yet."""
    name = signal.Signals(signum).name
    if folder and has_checkpoints(folder):
        return f"stopped by {name}: the last epoch checkpoint in {folder} is kept; rerun the same command to resume"
    where = folder or "the output folder"
    return (f"stopped by {name} before an epoch finished: no checkpoint was written in {where}; rerunning the same "
            "command starts the run over")


# how long after a RunStopped that Python dropped it is raised again
STOP_RETRY_S = 0.05


def install_stop_handlers():
    """SIGINT and SIGTERM raise RunStopped once (a second signal while stopping is ignored).

    Every file a run writes is renamed into place, so any point is a safe one to stop at:
    the last epoch checkpoint stays, and rerunning the command resumes from it.

    Python drops an exception raised where nothing can catch it (an at-fork hook, a
    `__del__`: DataLoader workers starting or stopping, as they do mid-epoch on Dassl's
    engine) and prints its traceback. A RunStopped dropped so is not printed but raised
    again by SIGALRM, STOP_RETRY_S later, once that code has returned."""
    stopping = []

    def stop(signum, frame):
        if stopping:
            return
        stopping.append(signum)
        raise RunStopped(signum)

    def stop_again(_alarm, frame):
        raise RunStopped(stopping[0])

    def unraisable(hook_args, print_it=sys.unraisablehook):
        if isinstance(hook_args.exc_value, RunStopped):
            signal.setitimer(signal.ITIMER_REAL, STOP_RETRY_S)
        else:
            print_it(hook_args)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, stop)
    if hasattr(signal, "setitimer"):  # POSIX
        signal.signal(signal.SIGALRM, stop_again)
        sys.unraisablehook = unraisable
