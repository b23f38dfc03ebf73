"""Deterministic splits, cached as JSON next to the data.

Shared by the real benchmarks (`datasets/`) and the embedded world (`datasets/synth.py`):

- `open_set_split(pool_labels, num_classes_total, id_ratio, num_labeled, seed)`: task A.
  The first round(id_ratio * C) classes in dataset order are ID; N labeled images per ID
  class; every other pool image (ID and OOD) is unlabeled.
- `labeled_ratio_split(n_items, ratio, seed)`: task C. That share of the training images
  keeps its labels; the rest is unlabeled.
- `cached_split(cache_dir, dataset_key, setting, seed, build_fn, fingerprint)`: the split
  from `<cache_dir>/splits/<dataset_key>/<setting>_seed<seed>.json`, else `build_fn()`
  written there atomically.

Splits hold indices into the pool (sorted), so they depend only on (dataset, setting,
seed) and the pool's order: two methods run with the same seed see the same images.
Randomness comes from a local generator seeded with the run's seed, never the global
RNG, so drawing a split does not shift the training run's random stream.
"""
import json
import logging
import os
import os.path as osp
import random
from collections import defaultdict

_logger = logging.getLogger("leclip")


def num_id_classes(num_classes_total, id_ratio):
    """ID classes are the first round(id_ratio * C) classes in the dataset's order (ours)."""
    if not 0 < id_ratio <= 1:
        raise ValueError(f"DATASET.ID_RATIO={id_ratio}: use a value in (0, 1]")
    return max(1, round(id_ratio * num_classes_total))


def open_set_split(pool_labels, num_classes_total, id_ratio, num_labeled, seed, classnames=None):
    """N labeled images per ID class; every other pool image (ID and OOD) is unlabeled.

    `pool_labels[i]` is the class index of pool image i in the dataset's order; classes
    `>= K` are OOD. `classnames` (optional) only names a short class in the error.
    Returns dict(labeled=[pool indices], unlabeled=[pool indices], num_id=K,
    id_classes=[0..K-1]); both index lists are sorted and together cover the pool.
    """
    if num_labeled < 1:
        raise ValueError(f"DATASET.NUM_LABELED={num_labeled}: set the labels per ID class (5 or 20)")
    num_id = num_id_classes(num_classes_total, id_ratio)
    by_class = defaultdict(list)
    for index, label in enumerate(pool_labels):
        by_class[label].append(index)
    rng = random.Random(seed)
    labeled = []
    for label in range(num_id):
        candidates = by_class.get(label, [])
        if len(candidates) < num_labeled:
            name = classnames[label] if classnames else f"class {label}"
            raise ValueError(
                f"{name!r} has {len(candidates)} training images, fewer than "
                f"DATASET.NUM_LABELED={num_labeled}: lower NUM_LABELED or check the dataset copy"
            )
        labeled.extend(rng.sample(candidates, num_labeled))
    labeled.sort()
    chosen = set(labeled)
    unlabeled = [i for i in range(len(pool_labels)) if i not in chosen]
    return {"labeled": labeled, "unlabeled": unlabeled, "num_id": num_id, "id_classes": list(range(num_id))}


def labeled_ratio_split(n_items, ratio, seed):
    """round(ratio * n) images (at least one) keep their labels; the rest is unlabeled."""
    if not 0 < ratio <= 1:
        raise ValueError(f"DATASET.LABELED_RATIO={ratio}: use a value in (0, 1]")
    if n_items < 1:
        raise ValueError("No training images to split: check DATASET.ROOT and the image lists")
    n_labeled = max(1, round(ratio * n_items))
    labeled = sorted(random.Random(seed).sample(range(n_items), n_labeled))
    chosen = set(labeled)
    return {"labeled": labeled, "unlabeled": [i for i in range(n_items) if i not in chosen]}


def split_path(cache_dir, dataset_key, setting, seed):
    return osp.join(cache_dir, "splits", dataset_key, f"{setting}_seed{seed}.json")


def _read_cache(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as err:
        _logger.warning("Unreadable split cache %s (%s): rebuilding it", path, err)
        return None


def cached_split(cache_dir, dataset_key, setting, seed, build_fn, fingerprint):
    """The split from its JSON cache, or `build_fn()` written there atomically.

    `fingerprint` (any JSON value describing the pool, e.g. its size and a hash of its
    paths) is stored with the split: when the data changed, the split is rebuilt with a
    warning rather than silently reused. A folder that cannot be written (a read-only
    dataset copy) only costs the cache: the split is drawn again on the next run, the same.
    """
    path = split_path(cache_dir, dataset_key, setting, seed)
    if osp.exists(path):
        cached = _read_cache(path)
        if cached is not None and cached.get("fingerprint") == fingerprint:
            return cached["split"]
        if cached is not None:
            _logger.warning("The data under %s changed since %s was written: rebuilding the split", cache_dir, path)
    split = build_fn()
    record = {"dataset": dataset_key, "setting": setting, "seed": seed, "fingerprint": fingerprint, "split": split}
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        os.makedirs(osp.dirname(path), exist_ok=True)
        with open(tmp, "w") as f:
            json.dump(record, f)
        os.replace(tmp, path)  # readers never see a half-written file
    except OSError as err:
        _logger.warning("Cannot cache the split in %s (%s): it is drawn again on each run", path, err)
    return split
