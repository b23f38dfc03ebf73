"""`LEDatasetBase`: Dassl's DatasetBase with explicit class names, on either engine.

Dassl derives the classes from train_x's labels, which cannot work for open-set data
(the class list is the ID classes only) nor for multi-label data (labels are multi-hot
tuples) nor when train_x is empty (task B). LE-CLIP datasets pass `classnames`.
"""
import hashlib
import os
import os.path as osp

from .dassl import DatasetBase, Datum


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


def dataset_root(cfg, folder):
    """<DATASET.ROOT>/<folder>, which must exist."""
    root = osp.abspath(osp.expanduser(cfg.DATASET.ROOT or "."))
    path = osp.join(root, folder)
    if not osp.isdir(path):
        raise FileNotFoundError(
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


def fingerprint(items, root):
    """A short description of a list of (path, label) items, stored with cached splits.
    Paths count relative to the dataset folder, so moving the data keeps the cache."""
    digest = hashlib.sha1("\n".join(sorted(osp.relpath(p, root) for p, _ in items)).encode()).hexdigest()
    return {"count": len(items), "sha1": digest}


class OpenSetDataset(LEDatasetBase):
    """Task A: the first ID_RATIO of the classes are ID; N labels per ID class.

    Subclasses read their files into `pool`, `test` (lists of (path, class index in
    the dataset's order)) and `classnames`, then call `build`.
    """

    task = "ossl"

    def build(self, cfg, key, cache_dir, classnames, pool, test, val=None):
        from . import splits

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
            fingerprint(pool, cache_dir),
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

    def build(self, cfg, key, cache_dir, classnames, train, test):
        from . import splits

        ratio = cfg.DATASET.LABELED_RATIO
        unsup = cfg.DATASET.SETTING == "unsup"
        if unsup == (ratio > 0):
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
                lambda: splits.labeled_ratio_split(len(train), ratio, cfg.SEED), fingerprint(train, cache_dir),
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
