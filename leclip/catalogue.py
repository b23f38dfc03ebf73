"""The methods, datasets, settings and config files the harness knows, read from the
registered trainers and datasets (no list of its own), and the config they resolve to.

A trainer declares `methods` ({harness key: name in the tables}, its own last; the
others are variants, `variants/<key>.yaml` over the recipe), `tasks` (A, B, C:
`leclip.tasks`), `table_row`, and where it has them `upper_bounds` (methods that learn
from the true labels) and `metrics` (its own, shown in the tables beside its
evaluator's). A dataset declares `key` (configs/datasets/<key>.yaml), its `task` (label
format), `paper_settings`, `table_column`, `official` counts, and `embedded` (rendered
on first use) or `named_settings` where it has them. `config_dir` / `config_file` on
either class place its YAMLs elsewhere than configs/ (a plugin's own folder).
"""
import contextlib
import io
import os
import os.path as osp
from collections import OrderedDict, namedtuple

from .tasks import TASK_NAMES, UNSUPERVISED, describe, task_of

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = osp.join(REPO, "configs")

Method = namedtuple("Method", "trainer tasks display variant upper_bound config_dir metrics")
Dataset = namedtuple("Dataset", "name cls config_file")


class HarnessError(ValueError):
    """A bad key, setting or config: the message says what to fix."""


def _registered(registry_name, package):
    import importlib

    importlib.import_module(package)  # registers every module of it
    from leclip import dassl

    registry = getattr(dassl, registry_name)
    return [(name, registry.get(name)) for name in registry.registered_names()]


def methods():
    """OrderedDict harness key -> Method, in each task's table order: the upper bounds
    first, then by the trainer's `table_row` (as the papers' tables)."""
    rows = []
    for name, cls in _registered("TRAINER_REGISTRY", "leclip.trainers"):
        declared = getattr(cls, "methods", None)
        if not declared:
            continue  # a trainer the harness does not run (a Dassl fork's own)
        folder = getattr(cls, "config_dir", None) or osp.join(CONFIGS, "trainers", name)
        last = len(declared) - 1
        for k, (key, display) in enumerate(declared.items()):
            upper = key in getattr(cls, "upper_bounds", ())
            variant = None if k == last else key  # the last is the trainer's own method
            method = Method(name, tuple(cls.tasks), display, variant, upper, folder, tuple(getattr(cls, "metrics", ())))
            rows.append(((not upper, cls.table_row, k), key, method))
    return OrderedDict((key, method) for _, key, method in sorted(rows, key=lambda r: r[0]))


def datasets():
    """OrderedDict harness key -> Dataset, in the tables' column order."""
    found = []
    for name, cls in _registered("DATASET_REGISTRY", "leclip.datasets"):
        key = getattr(cls, "key", None)
        if key is None:
            continue
        path = getattr(cls, "config_file", None) or osp.join(CONFIGS, "datasets", f"{key}.yaml")
        found.append((cls.table_column, key, Dataset(name, cls, path)))
    return OrderedDict((key, data) for _, key, data in sorted(found, key=lambda r: (r[0], r[1])))


def check_method(key):
    """The Method of harness key `key`."""
    known = methods()
    if key not in known:
        raise HarnessError(f"Unknown method {key!r}; valid methods: {', '.join(known)}")
    return known[key]


def check_dataset(key):
    known = datasets()
    if key not in known:
        raise HarnessError(f"Unknown dataset {key!r}; valid datasets: {', '.join(known)}")
    return known[key]


def task_of_setting(dataset_key, setting):
    """A, B or C of a dataset in a setting."""
    return task_of(check_dataset(dataset_key).cls.task, setting)


def task_methods(task):
    """The methods of a task, in its table's order."""
    return [key for key, method in methods().items() if task in method.tasks]


def task_metrics(task):
    """A task's columns: its evaluator's metrics, then those its methods add."""
    from .evaluators import _TASK_EVALUATORS  # the evaluator of each label format (the one map of them)
    from .tasks import LABEL_FORMATS

    columns = list(_TASK_EVALUATORS[LABEL_FORMATS[task][0]].metrics)
    for key in task_methods(task):
        columns += [m for m in methods()[key].metrics if m not in columns]
    return columns


def ablated(task):
    """The method whose ablation table the task has (configs/ablations/<method>.txt)."""
    found = [key for key in task_methods(task) if osp.isfile(osp.join(CONFIGS, "ablations", f"{key}.txt"))]
    if not found:
        raise HarnessError(f"Task {task} has no ablation table: no configs/ablations/<method>.txt of its methods")
    return found[-1]


def check_serves(method_key, dataset_key, setting):
    """Refuse a method on a task it does not serve (the trainer's `tasks`)."""
    served = check_method(method_key).tasks
    task = task_of_setting(dataset_key, setting)
    if task not in served:
        raise HarnessError(
            f"{method_key} serves task {describe(served)}, but {dataset_key} {setting} is task {task} "
            f"({TASK_NAMES[task]}): run one of {', '.join(task_methods(task))}"
        )


def setting_opts(dataset_key, setting):
    """Config overrides that select SETTING on the dataset."""
    cls, setting = check_dataset(dataset_key).cls, str(setting)
    named = getattr(cls, "named_settings", None)
    if named:
        if setting not in named:
            raise HarnessError(f"{dataset_key}: SETTING is one of {', '.join(map(repr, named))} (DATASET.SETTING), not {setting!r}")
        return ["DATASET.SETTING", setting]
    if cls.task != "multilabel":
        if not setting.isdigit() or int(setting) < 1:
            raise HarnessError(f"{dataset_key}: SETTING is the number of labels per ID class (5 or 20), not {setting!r}")
        return ["DATASET.NUM_LABELED", setting]
    if setting == UNSUPERVISED:
        return ["DATASET.SETTING", UNSUPERVISED]
    try:
        ratio = float(setting)
    except ValueError:
        ratio = -1.0
    if not 0 < ratio <= 1:
        raise HarnessError(
            f"{dataset_key}: SETTING is 'unsup' (task B) or a labeled ratio in (0, 1] (task C), not {setting!r}"
        )
    return ["DATASET.LABELED_RATIO", setting]


def _same_setting(a, b):
    try:
        return float(a) == float(b)
    except ValueError:
        return a == b


def setting_note(dataset_key, setting):
    """One line when SETTING is valid but not one the papers report, else None."""
    setting_opts(dataset_key, setting)
    known = check_dataset(dataset_key).cls.paper_settings
    if any(_same_setting(str(setting), k) for k in known):
        return None
    return f"note: setting {setting} on {dataset_key} is not one the papers report ({', '.join(known)}); running it anyway"


def dataset_config(dataset_key):
    return check_dataset(dataset_key).config_file


def dataset_present(dataset_key, data_root):
    """(True, "") when the dataset is under `data_root` (an embedded world always is: it
    renders there), else (False, why). A dataset whose folder is there but broken raises
    its one message."""
    cls = check_dataset(dataset_key).cls
    if getattr(cls, "embedded", False):
        return True, ""
    from leclip.data import DatasetNotFound
    from leclip.dassl import build_dataset

    setting = cls.paper_settings[-1]
    cfg = setup_cfg(dataset_config_file=dataset_config(dataset_key), opts=setting_opts(dataset_key, setting),
                    root=data_root, seed=1)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # its "Loading dataset" lines
            build_dataset(cfg)
    except DatasetNotFound as err:
        return False, str(err).split(". Set DATASET.ROOT")[0]
    return True, ""


def task_columns(task):
    """(dataset, setting) columns of a task's whole-paper table, in the datasets' order."""
    return [(key, setting) for key, data in datasets().items() for setting in data.cls.paper_settings
            if task_of(data.cls.task, setting) == task]


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
    method = check_method(method_key)
    files = [trainer_config(method_key, dataset_key)]
    if method.variant:
        files.append(osp.join(method.config_dir, "variants", f"{method.variant}.yaml"))
    return files


def trainer_config(method_key, dataset_key):
    """The method's recipe on the dataset: <Trainer>/<dataset key>.yaml when the
    benchmark has its own, else the shared synth.yaml (embedded worlds) or vit_b16.yaml
    (real benchmarks)."""
    method = check_method(method_key)
    folder = method.config_dir
    own = osp.join(folder, f"{dataset_key}.yaml")
    if osp.exists(own):
        return own
    embedded = getattr(check_dataset(dataset_key).cls, "embedded", False)
    shared = osp.join(folder, "synth.yaml" if embedded else "vit_b16.yaml")
    if osp.exists(shared):
        return shared
    if not osp.isdir(folder):
        raise HarnessError(
            f"Method {method_key!r} (trainer {method.trainer}) is not implemented in this version: there is no {folder}/"
        )
    present = ", ".join(sorted(os.listdir(folder))) or "nothing"
    if embedded:
        how = "Write it (start from the file there)"
    else:  # never a synthetic recipe for a real benchmark: its model and input size are the world's
        how = ("Write it with the paper's backbone, input size and schedule (docs/PROTOCOLS.md; synth.yaml is the "
               "embedded world's and does not apply)")
    raise HarnessError(
        f"Method {method_key!r} has no config for {dataset_key}: expected {own} or {shared} ({folder}/ holds "
        f"{present}). {how}, or run train.py with --config-file"
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


FLAG_KEYS = {
    "root": "DATASET.ROOT",
    "output_dir": "OUTPUT_DIR",
    "resume": "RESUME",
    "seed": "SEED",
    "trainer": "TRAINER.NAME",
    "backbone": "MODEL.BACKBONE.NAME",
    "dataset": "DATASET.NAME",
}


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
    pairs = []
    for name, key in FLAG_KEYS.items():
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
