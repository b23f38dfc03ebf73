"""The run/compare harness in one place: method and dataset keys, settings, configs,
and the rules that keep results safe.

`scripts/run.sh`, `scripts/compare.sh`, `train.py`, the tests and the benchmarks all go
through these tables, so a method or benchmark is added in one spot.

Safety rules of a run (`run`): one run per output folder at a time (a lock file naming
its holder); a finished `results.json` is never overwritten (`--overwrite` keeps it
beside the new one); a run resumes only from checkpoints written with the same config
(`--force-resume` overrides); results and config are written atomically; undefined
metrics are JSON null. The harness (`run_seeds`) refuses overrides of the keys that
place results (seed, setting, output folder), stops its train.py child on SIGINT or
SIGTERM (the child keeps its last epoch checkpoint) and resolves DATA and OUTPUT
against the caller's working directory. With GPUS=N (N > 1) each seed's child is
`torchrun --standalone --nproc_per_node N train.py ...`: one run on N processes.
"""
import contextlib
import glob
import io
import json
import math
import os
import os.path as osp
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import OrderedDict, namedtuple

from .files import write_text_atomic
from .tables import cell, stat, text_table

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = osp.join(REPO, "configs")

# tasks: A = fine-grained open-set SSL, B = unsupervised multi-label, C = semi-supervised multi-label
TASK_NAMES = {
    "A": "fine-grained open-set semi-supervised classification",
    "B": "unsupervised multi-label classification",
    "C": "semi-supervised multi-label classification",
}
# variant: a baseline that is another trainer with some switches, written in
# configs/trainers/<trainer>/variants/<variant>.yaml and merged over the trainer's recipe
Method = namedtuple("Method", "trainer tasks display variant", defaults=(None,))

# harness key -> (registered trainer name, tasks it serves, name in the tables, variant),
# in the papers' row order: each task's table lists its methods in this order
METHODS = OrderedDict(
    bce_full=Method("CCD", "B", "BCE (true labels)", "bce_full"),
    zsclip=Method("LEZeroshotCLIP", "ABC", "ZeroshotCLIP"),
    clip_lora=Method("LECLIPLoRA", "A", "CLIP-LoRA"),
    clip_adapter=Method("LECLIPAdapter", "A", "CLIP-Adapter"),
    coop=Method("LECoOp", "A", "CoOp"),
    locoop=Method("LELoCoOp", "A", "LoCoOp"),
    plot=Method("LEPLOT", "A", "PLOT"),
    maple=Method("LEMaPLe", "A", "MaPLe"),
    cfsg=Method("CFSG", "A", "CFSG-CLIP"),
    an=Method("CCD", "B", "AN (CLIP top-1)", "an"),
    an_ls=Method("CCD", "B", "AN-LS (CLIP top-1)", "an_ls"),
    role=Method("CCD", "B", "ROLE (CLIP top-1)", "role"),
    cdul=Method("CCD", "B", "CDUL", "cdul"),
    ccd=Method("CCD", "B", "CCD"),
    dualcoop=Method("CSA", "C", "DualCoOp", "dualcoop"),
    dualcoop_pl=Method("CSA", "C", "DualCoOp + pseudo-labels", "dualcoop_pl"),
    csa=Method("CSA", "C", "CSA"),
)
# the method each task's ablation table takes apart (configs/ablations/<method>.txt)
ABLATED = {"A": "cfsg", "B": "ccd", "C": "csa"}
# rows that learn from the true training labels: the upper bound of their task, marked in the tables
USES_LABELS = ("bce_full",)

# harness key -> (registered dataset name, task)
DATASETS = OrderedDict(
    synth_fg=("SynthFG", "A"),
    dogs=("LEStanfordDogs", "A"),
    cars=("LEStanfordCars", "A"),
    cub=("LECUB", "A"),
    aircraft=("LEFGVCAircraft", "A"),
    semiaves=("LESemiAves", "A"),
    synth_ml=("SynthML", "BC"),
    voc2007=("LEVOC2007", "BC"),
    voc2012=("LEVOC2012", "BC"),
    coco=("LECOCO", "BC"),
    nuswide=("LENUSWIDE", "BC"),
)

# the name of each method in the tables
DISPLAY = {key: method.display for key, method in METHODS.items()}
# the methods of each task, in the papers' row order (derived from METHODS)
TASK_METHODS = {task: [key for key, method in METHODS.items() if task in method.tasks] for task in TASK_NAMES}
TASK_METRICS = {
    "A": ["closed_accuracy", "balanced_accuracy", "auroc"],
    "B": ["mAP", "CF1", "OF1", "final_mAP"],  # mAP of the label-free rule's model; final_mAP of the last
    "C": ["mAP", "CF1", "OF1"],
}
SETTING_RESULTS = (
    "accuracy", "macro_f1", "closed_accuracy", "balanced_accuracy", "auroc", "mAP", "CF1", "OF1",
    "final_mAP", "final_CF1", "final_OF1", "selected_epoch",  # CCD: the last model beside the selected one
    "labels_initial_mAP", "labels_final_mAP",  # CCD: its pseudo-labels against the hidden labels
)
# the settings the papers report; others run, with a note
PAPER_SETTINGS = {"A": ("5", "20"), "semiaves": ("in", "inout"), "BC": ("unsup", "0.05", "0.1", "0.15", "0.2")}
# keys the harness sets from its arguments: an override would file results in the wrong folder
HARNESS_KEYS = {
    "SEED": "give seeds as arguments: bash scripts/run.sh METHOD DATASET SETTING 1 2 3",
    "OUTPUT_DIR": "set the output root with OUTPUT=... (each seed gets its own folder below it)",
    "DATASET.ROOT": "set the data root with DATA=...",
    "RESUME": "the harness resumes each seed from its own folder",
    "TRAINER.NAME": "the method is the first argument",
    "DATASET.NAME": "the dataset is the second argument",
    "DATASET.NUM_LABELED": "the setting is the third argument (e.g. 5 or 20)",
    "DATASET.LABELED_RATIO": "the setting is the third argument (e.g. 0.1)",
    "DATASET.SETTING": "the setting is the third argument (e.g. unsup, in, inout)",
}
# config keys that do not change what a run computes: a resume may change them
RESUME_MAY_CHANGE = (
    "OUTPUT_DIR", "RESUME", "DATASET.ROOT", "VERBOSE", "TRAIN.PRINT_FREQ", "TRAIN.CHECKPOINT_FREQ",
    "DATALOADER.NUM_WORKERS", "TRAINER.VIZ_IMAGES",
)
RESULTS = "results.json"
VIZ_FOLDER = "viz"  # train.py --viz: the trainer's figures, in the run's folder
LOCK = "run.lock"


class HarnessError(ValueError):
    """A bad key, setting or config: the message says what to fix."""


class Reported(HarnessError):
    """A train.py child ended with exit status 2: it printed the one message already."""


class RunStopped(KeyboardInterrupt):
    """SIGINT or SIGTERM reached a run; the last epoch checkpoint is kept."""

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum


def check_method(key):
    """The registered trainer name of method `key`."""
    if key not in METHODS:
        raise HarnessError(f"Unknown method {key!r}; valid methods: {', '.join(METHODS)}")
    return METHODS[key].trainer


def check_dataset(key):
    if key not in DATASETS:
        raise HarnessError(f"Unknown dataset {key!r}; valid datasets: {', '.join(DATASETS)}")
    return DATASETS[key]


def task_of(dataset_key, setting):
    """A, B or C: multi-label data is task B when unsupervised, C with a labeled ratio."""
    task = check_dataset(dataset_key)[1]
    if task == "A":
        return "A"
    return "B" if str(setting) == "unsup" else "C"


def check_serves(method_key, dataset_key, setting):
    """Refuse a method on a task it does not serve (from METHODS' task column)."""
    check_method(method_key)
    task = task_of(dataset_key, setting)
    served = METHODS[method_key].tasks
    if task not in served:
        raise HarnessError(
            f"{method_key} serves task {'/'.join(served)} ({'; '.join(TASK_NAMES[t] for t in served)}), but "
            f"{dataset_key} {setting} is task {task} ({TASK_NAMES[task]}): run one of {', '.join(TASK_METHODS[task])}"
        )


def setting_opts(dataset_key, setting):
    """Config overrides that select SETTING on the dataset."""
    setting = str(setting)
    if dataset_key == "semiaves":
        if setting not in ("in", "inout"):
            raise HarnessError(f"Semi-Aves settings are 'in' (U_in) and 'inout' (U_in + U_out), not {setting!r}")
        return ["DATASET.SETTING", setting]
    if check_dataset(dataset_key)[1] == "A":
        if not setting.isdigit() or int(setting) < 1:
            raise HarnessError(f"{dataset_key}: SETTING is the number of labels per ID class (5 or 20), not {setting!r}")
        return ["DATASET.NUM_LABELED", setting]
    if setting == "unsup":
        return ["DATASET.SETTING", "unsup"]
    try:
        ratio = float(setting)
    except ValueError:
        ratio = -1.0
    if not 0 < ratio <= 1:
        raise HarnessError(
            f"{dataset_key}: SETTING is 'unsup' (task B) or a labeled ratio in (0, 1] (task C), not {setting!r}"
        )
    return ["DATASET.LABELED_RATIO", setting]


def setting_note(dataset_key, setting):
    """One line when SETTING is valid but not one the papers report, else None."""
    setting_opts(dataset_key, setting)
    group = "semiaves" if dataset_key == "semiaves" else check_dataset(dataset_key)[1]
    known = PAPER_SETTINGS[group]
    same = str(setting) in known
    if group == "BC" and str(setting) != "unsup":
        same = any(k != "unsup" and float(k) == float(setting) for k in known)
    if group == "A":
        same = str(int(setting)) in known
    if same:
        return None
    return f"note: setting {setting} on {dataset_key} is not one the papers report ({', '.join(known)}); running it anyway"


def check_overrides(opts):
    """Refuse KEY VALUE overrides of the keys the harness sets from its arguments."""
    for key in list(opts)[::2]:
        if key in HARNESS_KEYS:
            raise HarnessError(f"{key} cannot be overridden through the harness: {HARNESS_KEYS[key]}")


def dataset_config(dataset_key):
    check_dataset(dataset_key)
    return osp.join(CONFIGS, "datasets", f"{dataset_key}.yaml")


def dataset_present(dataset_key, data_root):
    """(True, "") when the dataset is under `data_root` (the embedded worlds always
    are: they render there), else (False, why). A dataset whose folder is there but
    broken raises its one message."""
    if dataset_key.startswith("synth_"):
        return True, ""
    import leclip.datasets  # noqa: F401  registers the benchmarks
    from leclip.data import DatasetNotFound
    from leclip.dassl import build_dataset

    setting = PAPER_SETTINGS["semiaves" if dataset_key == "semiaves" else check_dataset(dataset_key)[1]][-1]
    cfg = setup_cfg(dataset_config_file=dataset_config(dataset_key), opts=setting_opts(dataset_key, setting),
                    root=data_root, seed=1)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # its "Loading dataset" lines
            build_dataset(cfg)
    except DatasetNotFound as err:
        return False, str(err).split(". Set DATASET.ROOT")[0]
    return True, ""


def task_columns(task):
    """(dataset, setting) columns of a task's whole-paper table, in DATASETS order."""
    columns = []
    for key, (_, tasks) in DATASETS.items():
        if task == "A" and tasks == "A":
            settings = PAPER_SETTINGS["semiaves" if key == "semiaves" else "A"]
        elif task in "BC" and tasks == "BC":
            settings = ["unsup"] if task == "B" else [s for s in PAPER_SETTINGS["BC"] if s != "unsup"]
        else:
            continue
        columns += [(key, s) for s in settings]
    return columns


def task_settings(task, data_root):
    """([(dataset, setting)] of the task's datasets under `data_root`, in the papers'
    settings, {absent dataset: why})."""
    present, absent, checked = [], {}, {}
    for dataset_key, setting in task_columns(task):
        if dataset_key not in checked:
            checked[dataset_key] = dataset_present(dataset_key, data_root)
        found, why = checked[dataset_key]
        if found:
            present.append((dataset_key, setting))
        else:
            absent[dataset_key] = why
    return present, absent


def trainer_configs(method_key, dataset_key):
    """The method's config files, merged in order: its trainer's recipe, then its variant."""
    files = [trainer_config(method_key, dataset_key)]
    variant = METHODS[method_key].variant
    if variant:
        files.append(osp.join(CONFIGS, "trainers", METHODS[method_key].trainer, "variants", f"{variant}.yaml"))
    return files


def trainer_config(method_key, dataset_key):
    """The method's recipe on the dataset: configs/trainers/<Trainer>/<dataset key>.yaml
    when the benchmark has its own, else the shared synth.yaml (embedded world) or
    vit_b16.yaml (real benchmarks)."""
    trainer = check_method(method_key)
    folder = osp.join(CONFIGS, "trainers", trainer)
    own = osp.join(folder, f"{dataset_key}.yaml")
    if osp.exists(own):
        return own
    synthetic = dataset_key.startswith("synth_")
    name = "synth.yaml" if synthetic else "vit_b16.yaml"
    path = osp.join(folder, name)
    if osp.exists(path):
        return path
    if not osp.isdir(folder):
        raise HarnessError(
            f"Method {method_key!r} (trainer {trainer}) is not implemented in this version: there is no {folder}/"
        )
    where = "the embedded world (synth_*)" if synthetic else "the real benchmarks"
    present = ", ".join(sorted(os.listdir(folder))) or "nothing"
    raise HarnessError(
        f"Method {method_key!r} has no config for {where}: expected {own} or {path} ({folder}/ holds {present}). "
        f"Write {name} (start from the file there), or run train.py with --config-file"
    )


# keys that take a word or a number ("model" or 100): yacs would refuse a number over a
# word default, so they are open to either type during each merge
WORD_OR_NUMBER = ("TRAINER.LOGIT_SCALE",)


def _merge(cfg, merge):
    saved = {}
    for dotted in WORD_OR_NUMBER:
        *parents, leaf = dotted.split(".")
        node = cfg
        for part in parents:
            node = node[part]
        saved[dotted] = (node, leaf, node[leaf])
        node[leaf] = None
    try:
        merge()
    finally:
        for node, leaf, value in saved.values():
            if node[leaf] is None:
                node[leaf] = value


def _merge_file(cfg, path):
    if not osp.exists(path):
        raise HarnessError(f"Config file not found: {path}")
    try:
        _merge(cfg, lambda: cfg.merge_from_file(path))
    except (KeyError, AssertionError, ValueError) as err:
        raise HarnessError(f"Bad config in {path}: {err} (check the key's spelling and type)") from None


def setup_cfg(config_file="", dataset_config_file="", opts=(), **overrides):
    """Dassl's setup_cfg: defaults + dataset YAML + trainer YAML(s) + opts + flags.
    `config_file`: one path, or several merged in order (a recipe, then its variant)."""
    import leclip.datasets  # noqa: F401  registers datasets and their config keys
    import leclip.trainers  # noqa: F401
    from leclip.dassl import get_cfg_default

    cfg = get_cfg_default()
    if dataset_config_file:
        _merge_file(cfg, dataset_config_file)
    for path in [config_file] if isinstance(config_file, str) else config_file:
        if path:
            _merge_file(cfg, path)
    flags = {
        "root": "DATASET.ROOT",
        "output_dir": "OUTPUT_DIR",
        "resume": "RESUME",
        "seed": "SEED",
        "trainer": "TRAINER.NAME",
        "backbone": "MODEL.BACKBONE.NAME",
        "dataset": "DATASET.NAME",
    }
    pairs = []
    for name, key in flags.items():
        value = overrides.get(name)
        if value not in (None, ""):
            pairs += [key, str(value)]
    opts = list(opts)
    if len(opts) % 2:
        raise HarnessError(f"Config overrides come in KEY VALUE pairs; got an odd list: {opts}")
    try:
        _merge(cfg, lambda: cfg.merge_from_list(pairs + opts))
    except (KeyError, AssertionError, ValueError) as err:
        raise HarnessError(f"Bad config override: {err} (check the key's spelling and type)") from None
    cfg.freeze()
    return cfg


# ---------------------------------------------------------------- results, lock, resume
def write_json_atomic(path, data):
    write_text_atomic(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


def metric_value(value):
    """A metric for results.json: a float, or None (JSON null) when it is undefined."""
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
    stem = path[: -len(ext)] if path.endswith(ext) else path
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = f"{stem}.{why}-{stamp}{ext}"
    k = 1
    while osp.exists(target):
        k += 1
        target = f"{stem}.{why}-{stamp}-{k}{ext}"
    os.replace(path, target)
    return target


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


def _flat(node, prefix=""):
    out = {}
    for key, value in node.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat(value, dotted + "."))
        else:
            out[dotted] = list(value) if isinstance(value, tuple) else value
    return out


def config_changes(saved_yaml, cfg):
    """['KEY: saved -> now', ...] for every key (outside RESUME_MAY_CHANGE) whose value
    differs between a saved config.yaml and `cfg`."""
    from yacs.config import CfgNode

    before, now = _flat(CfgNode.load_cfg(saved_yaml)), _flat(CfgNode.load_cfg(cfg.dump()))
    missing = object()
    changes = []
    for key in sorted(set(before) | set(now)):
        if key in RESUME_MAY_CHANGE:
            continue
        old, new = before.get(key, missing), now.get(key, missing)
        if old != new:
            show = lambda v: "(absent)" if v is missing else repr(v)  # noqa: E731
            changes.append(f"{key}: {show(old)} -> {show(new)}")
    return changes


def check_resume(cfg, force_resume):
    """Refuse to resume from checkpoints written with another config (unless forced).
    Returns the lines to log: a warning, or the changed keys of a forced resume."""
    folder = cfg.RESUME or cfg.OUTPUT_DIR
    if not glob.glob(osp.join(folder, "*", "checkpoint")):
        return []
    saved = osp.join(folder, "config.yaml")
    if not osp.exists(saved):
        return [f"Warning: {folder} holds checkpoints but no config.yaml: the resume cannot check the config"]
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


def run(cfg, eval_only=False, model_dir="", load_epoch=None, overwrite=False, force_resume=False, viz=False):
    """Train (or evaluate) one configured run; write config.yaml and results.json; with
    `viz` (train.py --viz) then the trainer's figures (`visualize`) into OUTPUT_DIR/viz.

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
        return _run_locked(cfg, eval_only, model_dir, load_epoch, results_path, finished, notes, viz)


def _run_locked(cfg, eval_only, model_dir, load_epoch, results_path, finished, notes, viz):
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
        write_text_atomic(osp.join(cfg.OUTPUT_DIR, "config.yaml"), cfg.dump())
    start = time.time()
    trainer = build_trainer(cfg)
    if eval_only:
        trainer.load_model(model_dir, epoch=load_epoch)
        trainer.test()
    else:
        trainer.train()
    metrics = getattr(trainer.evaluator, "last_results", {})
    results = OrderedDict((k, metric_value(v)) for k, v in metrics.items() if k in SETTING_RESULTS)
    results.update(
        trainer=cfg.TRAINER.NAME,
        dataset=cfg.DATASET.NAME,
        seed=cfg.SEED,
        ssl_mode=cfg.TRAINER.SSL.MODE,
        backbone=cfg.MODEL.BACKBONE.NAME,
        engine=ENGINE,
        device=str(trainer.device),
        processes=processes,
        seconds=round(time.time() - start, 1),
    )
    skipped = getattr(getattr(trainer, "dm", None), "skipped_images", None)
    if skipped is not None:
        results["skipped_images"] = len(skipped)
    if main:
        if osp.exists(results_path):  # a finished run (--overwrite) or an unreadable file: kept beside
            kept = keep_aside(results_path, "replaced" if finished is not None else "unreadable")
            print(f"The earlier {RESULTS} is kept as {kept}")
        # written after the run: a seed folder with results.json is a finished run
        write_json_atomic(results_path, results)
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


class Children:
    """Runs train.py children one at a time; SIGINT/SIGTERM to the harness are passed on
    to the running child, which stops at a safe point, and no further child starts."""

    def __init__(self):
        self.proc = None
        self.signum = None

    def forward(self, signum, frame):
        self.signum = signum
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signum)

    def install(self):
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self.forward)

    def call(self, command):
        if self.signum is not None:
            raise RunStopped(self.signum)
        self.proc = subprocess.Popen(command)
        if self.signum is not None:  # arrived while the child was starting
            self.proc.send_signal(self.signum)
        code = self.proc.wait()
        self.proc = None
        if self.signum is not None:
            raise RunStopped(self.signum)
        return code


CHILDREN = Children()


def seed_dir(output_root, dataset_key, setting, method_key, seed):
    return osp.join(output_root, dataset_key, str(setting), method_key, f"seed{seed}")


def launcher(processes=1):
    """The command that starts train.py: python, or torchrun with `processes` processes
    on this machine (--standalone: a free rendezvous port of its own)."""
    if processes == 1:
        return [sys.executable]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]


def processes_from_env(value):
    """GPUS=N: the processes of one run (unset or empty: 1)."""
    if value in (None, ""):
        return 1
    if not value.isdigit() or int(value) < 1:
        raise HarnessError(f"GPUS={value!r}: give the number of processes per run, a positive integer (e.g. GPUS=4)")
    return int(value)


def run_seeds(method_key, dataset_key, setting, seeds, opts=(), data_root="./data", output_root="./output", folder=None,
              flags=(), processes=1):
    """Run one setting for each seed (a train.py subprocess each); skip finished seeds.

    Results go to <output_root>/<dataset>/<setting>/<folder or method>/seed<k>/. `flags`
    are passed to train.py (--overwrite, --force-resume, --skip-bad-images, --viz, --debug); with
    --overwrite, finished seeds run again. A seed that ends with exit status 2 (bad input)
    stops the harness: the others would fail the same way. `processes` > 1 runs each seed
    under torchrun on that many processes (GPUS=N). Returns the seeds it ran."""
    trainer = check_method(method_key)
    check_serves(method_key, dataset_key, setting)
    trainer_yamls = trainer_configs(method_key, dataset_key)
    dataset_yaml = dataset_config(dataset_key)
    base_opts = setting_opts(dataset_key, setting)
    check_overrides(opts)
    note = setting_note(dataset_key, setting)
    if note:
        print(note, flush=True)
    data_root, output_root = osp.abspath(data_root), osp.abspath(output_root)
    failures, ran = [], []
    for seed in seeds:
        out = seed_dir(output_root, dataset_key, setting, folder or method_key, seed)
        tag = f"[{method_key} {dataset_key} {setting} seed {seed}]"
        results, why = read_result(osp.join(out, RESULTS))
        if results is not None and "--overwrite" not in flags:
            print(f"{tag} done already: {out}/{RESULTS} (--overwrite runs it again)")
            continue
        if results is None and why != "missing":
            print(f"{tag} {out}/{RESULTS} is {why}: it does not count as done, running the seed")
        print(f"{tag} -> {out}", flush=True)
        command = [
            *launcher(processes), osp.join(REPO, "train.py"),
            "--root", data_root, "--seed", str(seed), "--trainer", trainer,
            "--dataset-config-file", dataset_yaml, "--config-file", *trainer_yamls,
            "--output-dir", out, *flags, *base_opts,
            # (ours) a checkpoint every epoch: a killed seed loses at most the epoch it was in
            "TRAIN.CHECKPOINT_FREQ", "1", *opts,
        ]
        code = CHILDREN.call(command)
        ran.append(seed)
        if code == 2:
            raise Reported(f"seed {seed} stopped on bad input")
        if code in (128 + signal.SIGINT, 128 + signal.SIGTERM):  # the child alone was stopped
            raise RunStopped(code - 128)
        if code != 0:
            failures.append((seed, code, out))
    if failures:
        lines = []
        for seed, code, out in failures:
            log = osp.join(out, "log.txt")
            where = f"its log: {log}" if osp.exists(log) else "it stopped before writing a log; its error is printed above"
            lines.append(f"seed {seed} failed with exit status {code} ({where})")
        raise HarnessError(f"{method_key} on {dataset_key} {setting}: " + "; ".join(lines))
    return ran


# ---------------------------------------------------------------- the end of run.sh
def seed_summary(method_key, dataset_key, setting, seeds, output_root, ran):
    """What scripts/run.sh prints last: each seed's metrics and time, their mean ± std,
    and where the results are. `ran`: the seeds run now (the others were done before)."""
    metrics = TASK_METRICS[task_of(dataset_key, setting)]
    header = ["seed"] + metrics + ["time"]
    body, results = [], []
    for seed in seeds:
        data, why = read_result(osp.join(seed_dir(output_root, dataset_key, setting, method_key, seed), RESULTS))
        if data is None:
            body.append([seed] + ["—"] * len(metrics) + [f"no results ({why})"])
            continue
        results.append(data)
        seconds = data.get("seconds")
        when = "" if seed in ran else " (an earlier run)"
        values = [f"{data[k]:.2f}" if data.get(k) is not None else "n/a" for k in metrics]
        body.append([seed] + values + [f"{seconds:.1f} s{when}" if seconds is not None else f"?{when}"])
    body.append(["mean ± std"] + [cell(stat([r.get(k) for r in results])) for k in metrics]
                + [f"{sum(r.get('seconds') or 0 for r in results):.1f} s in all"])
    where = osp.dirname(seed_dir(output_root, dataset_key, setting, method_key, 0))
    return (f"== {DISPLAY.get(method_key, method_key)} on {dataset_key} {setting}: {len(results)} of {len(seeds)} "
            f"seeds, results in {where}/seed<k>/{RESULTS}\n" + text_table(header, body))


ROW_NAMES = "rows.json"  # in an ablation folder: {row folder: row name}


def ablation_rows(path):
    """[(row name, folder name, overrides)] from a "name | KEY VALUE ..." file."""
    if not osp.isfile(path):
        raise HarnessError(f"No ablation rows file {path}: write one ('name | KEY VALUE ...' per line)")
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if "|" not in line:
                raise HarnessError(f"{path}: rows read 'name | KEY VALUE ...', got {line!r}")
            name, overrides = (part.strip() for part in line.split("|", 1))
            folder = "".join(c if c.isalnum() or c in "+-=." else "_" for c in name)
            rows.append((name, folder, overrides.split()))
    return rows


def ablate(method_key, dataset_key, setting, seeds, rows_file, data_root, output_root, flags=(), opts=(), processes=1):
    """Run every ablation row (its overrides, then `opts`); returns the row folders in file order."""
    check_overrides(opts)
    rows = ablation_rows(rows_file)
    # the tables name each row as the rows file does, not by its folder
    ablation_dir = osp.join(output_root, dataset_key, setting, "ablation")
    os.makedirs(ablation_dir, exist_ok=True)
    names = {folder: name for name, folder, _ in rows}
    names_file = osp.join(ablation_dir, ROW_NAMES)
    if osp.isfile(names_file):  # rows of other rows files (another method's) keep their names
        with open(names_file) as f:
            names = {**json.load(f), **names}
    write_text_atomic(names_file, json.dumps(names, indent=1))
    folders = []
    for name, folder, overrides in rows:
        print(f"== ablation row: {name}", flush=True)
        run_seeds(method_key, dataset_key, setting, seeds, [*overrides, *opts], data_root, output_root,
                  osp.join("ablation", folder), flags, processes)
        folders.append(folder)
    return folders


def registered_trainers():
    import leclip.trainers  # noqa: F401
    from leclip.dassl import TRAINER_REGISTRY

    return set(TRAINER_REGISTRY.registered_names())


TRAIN_FLAGS = ("--overwrite", "--force-resume", "--skip-bad-images", "--viz", "--debug")


def _main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(prog="python -m leclip.harness")
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="one method, one setting, several seeds")
    run_p.add_argument("method")
    run_p.add_argument("dataset")
    run_p.add_argument("setting")
    run_p.add_argument("seeds", nargs="*", type=int)
    abl_p = sub.add_parser("ablate", help="every row of configs/ablations/<method>.txt")
    abl_p.add_argument("dataset")
    abl_p.add_argument("setting")
    abl_p.add_argument("seeds", nargs="*", type=int)
    abl_p.add_argument("--method", help="the method whose rows to run (default: the task's: cfsg, ccd or csa)")
    abl_p.add_argument("--rows", help="a rows file of the method's own (default: configs/ablations/<method>.txt)")
    abl_p.add_argument("--list", action="store_true", help="print the rows' folder names only")
    cmp_p = sub.add_parser("methods", help="the methods of a dataset's task that are available")
    cmp_p.add_argument("dataset")
    cmp_p.add_argument("setting")
    set_p = sub.add_parser("settings", help="'dataset setting' of each setting of TASK whose dataset is under DATA")
    set_p.add_argument("task", choices=sorted(TASK_NAMES))
    for p in (run_p, abl_p):
        p.add_argument("--overwrite", action="store_true", help="run finished seeds again (old results kept beside)")
        p.add_argument("--force-resume", action="store_true", help="resume from checkpoints of another config")
        p.add_argument("--skip-bad-images", action="store_true", help="leave out unreadable images (recorded)")
        p.add_argument("--viz", action="store_true", help="each seed's figures (CCD, CSA) in its folder's viz/")
    for p in (run_p, abl_p, cmp_p, set_p):
        p.add_argument("--debug", action="store_true", help="show tracebacks")
    argv = list(sys.argv[1:] if argv is None else argv)
    opts = []
    if "--" in argv:
        opts = argv[argv.index("--") + 1 :]
        argv = argv[: argv.index("--")]
    args = parser.parse_args(argv)
    debug = args.debug or bool(os.environ.get("LECLIP_DEBUG"))
    flags = [flag for flag in TRAIN_FLAGS if getattr(args, flag[2:].replace("-", "_"), False)]
    # relative DATA and OUTPUT are the caller's: scripts/*.sh do not change directory
    data_root = osp.abspath(os.environ.get("DATA") or "./data")
    output_root = osp.abspath(os.environ.get("OUTPUT") or "./output")
    try:
        processes = processes_from_env(os.environ.get("GPUS"))
        if args.command == "run":
            seeds = args.seeds or [1, 2, 3]
            ran = run_seeds(args.method, args.dataset, args.setting, seeds, opts, data_root, output_root, flags=flags,
                            processes=processes)
            print(seed_summary(args.method, args.dataset, args.setting, seeds, output_root, ran))
        elif args.command == "settings":
            present, absent = task_settings(args.task, data_root)
            for dataset_key, why in absent.items():
                print(f"absent: {dataset_key} ({why}): its columns are marked absent", file=sys.stderr)
            print("\n".join(f"{dataset_key} {setting}" for dataset_key, setting in present))
        elif args.command == "ablate":
            args.method = args.method or ABLATED[task_of(args.dataset, args.setting)]
            rows_file = args.rows or osp.join(CONFIGS, "ablations", f"{args.method}.txt")
            if args.list:
                print("\n".join(folder for _, folder, _ in ablation_rows(rows_file)))
            else:
                ablate(args.method, args.dataset, args.setting, args.seeds or [1], rows_file, data_root, output_root,
                       flags, opts, processes)
        else:
            if opts:
                raise HarnessError(f"'methods' takes no config overrides (got {' '.join(opts)})")
            task = task_of(args.dataset, args.setting)
            available = registered_trainers()
            for key in TASK_METHODS[task]:
                if METHODS[key].trainer in available:
                    print(key)
                else:
                    print(f"skipping {key}: trainer {METHODS[key].trainer} is not available yet", file=sys.stderr)
    except RunStopped as stop:
        name = signal.Signals(stop.signum).name
        print(f"stopped by {name}: the running seed kept its last epoch checkpoint; rerun the same command to "
              "resume", file=sys.stderr)
        return 128 + stop.signum
    except (HarnessError, ValueError, ImportError, OSError) as err:
        if debug:
            raise
        if not isinstance(err, Reported):
            print(f"error: {user_message(err)}\n(run with --debug to see the traceback)", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    CHILDREN.install()
    raise SystemExit(_main())
