"""`LEDatasetBase`: Dassl's DatasetBase with explicit class names, on either engine.

Dassl derives the classes from train_x's labels, which cannot work for open-set data
(the class list is the ID classes only) nor for multi-label data (labels are multi-hot
tuples) nor when train_x is empty (task B). LE-CLIP datasets pass `classnames`.
"""
import hashlib
import json
import os
import os.path as osp

from . import splits
from .datum import DatasetBase, Datum

# LE-CLIP's dataset keys and their defaults (declared in the config by leclip.config)
DATASET_DEFAULTS = {
    "DATASET.ID_RATIO": 0.5,  # (ours) the first half of the classes are ID
    "DATASET.LABELED_RATIO": 0.0,  # task C: share of training images that keep labels
    "DATASET.SETTING": "",  # "in"/"inout" for Semi-Aves, "unsup" for task B
}
NUM_LABELED_UNSET = -1  # Dassl's default of DATASET.NUM_LABELED


def reject_set_keys(cfg, keys, why):
    """One error naming the first of `keys` (dotted, with their defaults) that is set."""
    for dotted, default in keys.items():
        node = cfg
        for part in dotted.split("."):
            node = node[part]
        if node != default:
            raise ValueError(f"{dotted}={node!r} is not used here ({why}): remove it")


class LEDatasetBase(DatasetBase):
    def __init__(self, train_x=None, train_u=None, val=None, test=None, classnames=None):
        if classnames is None:
            raise ValueError(f"{type(self).__name__}: LE-CLIP datasets must pass classnames")
        self._given_classnames = list(classnames)
        super().__init__(train_x=train_x or [], train_u=train_u or [], val=val or [], test=test or [])

    def get_num_classes(self, data_source):
        return len(self._given_classnames)

    def get_lab2cname(self, data_source):
        return dict(enumerate(self._given_classnames)), list(self._given_classnames)


class DatasetNotFound(FileNotFoundError):
    """The dataset's folder is not under DATASET.ROOT (the harness marks it absent)."""


def dataset_root(cfg, folder):
    """<DATASET.ROOT>/<folder>, which must exist."""
    root = osp.abspath(osp.expanduser(cfg.DATASET.ROOT or "."))
    path = osp.join(root, folder)
    if not osp.isdir(path):
        raise DatasetNotFound(
            f"Dataset folder not found: {path}. Set DATASET.ROOT (or DATA for scripts/run.sh) to the folder "
            f"holding {folder}/ (see DATASETS.md)"
        )
    return path


def require_file(path, what="annotation file"):
    if not osp.isfile(path):
        raise FileNotFoundError(f"Missing {what}: {path} (re-extract the official archive; see DATASETS.md)")
    return path


def read_lines(path, what="annotation file"):
    with open(require_file(path, what)) as f:
        return [line.strip() for line in f if line.strip()]


def missing_files(paths):
    """Paths that do not exist, found with one directory listing per folder."""
    listing = {}
    missing = []
    for path in paths:
        folder, name = osp.split(path)
        if folder not in listing:
            try:
                listing[folder] = set(os.listdir(folder))
            except FileNotFoundError:
                listing[folder] = set()
        if name not in listing[folder]:
            missing.append(path)
    return missing


class MissingImagesError(FileNotFoundError):
    def __init__(self, message, missing):
        super().__init__(message)
        self.missing = missing


def check_images(paths, dataset_name):
    """Raise one clear error when listed images are absent (never a silently wrong split)."""
    missing = missing_files(paths)
    if missing:
        shown = "\n  ".join(missing[:5])
        raise MissingImagesError(
            f"{dataset_name}: {len(missing)} of {len(paths)} listed images are missing, e.g.\n  {shown}\n"
            "Check DATASET.ROOT and re-extract the images (see DATASETS.md; "
            f"`python scripts/check_dataset.py` lists them all)",
            missing,
        )


def fingerprint(items, root, classnames):
    """A short description of a list of (path, label) items and the class list, stored
    with cached splits: a relabelling, a new class order or a new item order (splits
    hold indices into the list) rebuilds the split. Paths count relative to the dataset
    folder, so moving the data keeps the cache."""
    lines = [f"{osp.relpath(p, root)}\t{json.dumps(_plain(label))}" for p, label in items]
    text = "\n".join(lines) + "\n# classes\n" + "\n".join(classnames)
    return {"count": len(items), "sha1": hashlib.sha1(text.encode()).hexdigest()}


def _plain(label):
    return int(label) if not isinstance(label, (tuple, list)) else [int(v) for v in label]


class OpenSetDataset(LEDatasetBase):
    """Task A: the first ID_RATIO of the classes are ID; N labels per ID class.

    Subclasses read their files into `pool`, `test` (lists of (path, class index in
    the dataset's order)) and `classnames`, then call `build`.
    """

    task = "ossl"
    # the settings (labels per ID class, DATASET.NUM_LABELED) the papers report
    paper_settings = ("5", "20")

    def build(self, cfg, key, cache_dir, classnames, pool, test, val=None):
        reject_set_keys(
            cfg,
            {"DATASET.LABELED_RATIO": 0.0, "DATASET.SETTING": ""},
            f"{type(self).__name__} is a task-A dataset: its setting is DATASET.NUM_LABELED",
        )
        num_labeled = cfg.DATASET.NUM_LABELED
        if num_labeled < 1:
            raise ValueError(f"DATASET.NUM_LABELED={num_labeled}: set the labels per ID class (5 or 20)")
        if cfg.SEED < 0:
            raise ValueError(f"SEED={cfg.SEED}: the labeled subset is drawn with the run's seed; set SEED >= 0")
        pool_labels = [label for _, label in pool]
        split = splits.cached_split(
            cache_dir,
            key,
            f"id{cfg.DATASET.ID_RATIO:g}_n{num_labeled}",
            cfg.SEED,
            lambda: splits.open_set_split(
                pool_labels, len(classnames), cfg.DATASET.ID_RATIO, num_labeled, cfg.SEED, classnames
            ),
            fingerprint(pool, cache_dir, classnames),
        )
        self.all_classnames = list(classnames)
        self.finish(
            [pool[i] for i in split["labeled"]],
            [pool[i] for i in split["unlabeled"]],
            test,
            val,
            classnames[: split["num_id"]],
        )

    def finish(self, train_x, train_u, test, val, id_classnames):
        def datum(item):
            path, label = item
            name = self.all_classnames[label] if 0 <= label < len(self.all_classnames) else "unknown"
            return Datum(path, label, classname=name)

        super().__init__(
            train_x=[datum(i) for i in train_x],
            train_u=[datum(i) for i in train_u],
            val=[datum(i) for i in val or []],
            test=[datum(i) for i in test],
            classnames=id_classnames,
        )


class MultiLabelDataset(LEDatasetBase):
    """Tasks B and C: `DATASET.SETTING unsup` (no label reaches the trainer) or a
    labeled share `DATASET.LABELED_RATIO` of the training images."""

    task = "multilabel"
    # the settings the papers report: unsup (DATASET.SETTING, task B), labeled ratios (DATASET.LABELED_RATIO, task C)
    paper_settings = ("unsup", "0.05", "0.1", "0.15", "0.2")

    def build(self, cfg, key, cache_dir, classnames, train, test):
        reject_set_keys(
            cfg,
            {"DATASET.NUM_LABELED": NUM_LABELED_UNSET, "DATASET.ID_RATIO": DATASET_DEFAULTS["DATASET.ID_RATIO"]},
            f"{type(self).__name__} is multi-label: its setting is DATASET.SETTING unsup or DATASET.LABELED_RATIO",
        )
        ratio = cfg.DATASET.LABELED_RATIO
        unsup = cfg.DATASET.SETTING == "unsup"
        if unsup == (ratio > 0) or not 0 <= ratio <= 1 or cfg.DATASET.SETTING not in ("", "unsup"):
            raise ValueError(
                f"{key} with DATASET.SETTING={cfg.DATASET.SETTING!r} and DATASET.LABELED_RATIO={ratio}: set either "
                "DATASET.SETTING unsup (task B) or DATASET.LABELED_RATIO in (0, 1] (task C)"
            )
        if unsup:
            split = {"labeled": [], "unlabeled": list(range(len(train)))}
        else:
            if cfg.SEED < 0:
                raise ValueError(f"SEED={cfg.SEED}: the labeled share is drawn with the run's seed; set SEED >= 0")
            split = splits.cached_split(
                cache_dir, key, f"ratio{ratio:g}", cfg.SEED,
                lambda: splits.labeled_ratio_split(len(train), ratio, cfg.SEED), fingerprint(train, cache_dir, classnames),
            )
        self.all_classnames = list(classnames)

        def datum(item):
            path, labels = item
            return Datum(path, labels if isinstance(labels, tuple) else tuple(int(v) for v in labels))

        super().__init__(
            train_x=[datum(train[i]) for i in split["labeled"]],
            train_u=[datum(train[i]) for i in split["unlabeled"]],
            test=[datum(i) for i in test],
            classnames=classnames,
        )


def multi_hot(indices, num_classes):
    labels = [0] * num_classes
    for index in indices:
        labels[index] = 1
    return labels
