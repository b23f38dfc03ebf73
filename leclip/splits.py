"""Deterministic splits, cached as JSON next to the data.

A split depends only on (dataset, setting, seed) and the pool it is drawn from: two
methods run with the same seed see the same labeled and unlabeled images. Randomness
comes from a local generator seeded with the run's seed, never the global RNG.
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

    Returns dict(labeled=[pool indices], unlabeled=[pool indices], num_id=K,
    id_classes=[0..K-1]).
    """
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
    """That share of the training images keeps its labels; the rest is unlabeled."""
    if not 0 < ratio <= 1:
        raise ValueError(f"DATASET.LABELED_RATIO={ratio}: use a value in (0, 1]")
    n_labeled = max(1, round(ratio * n_items))
    labeled = sorted(random.Random(seed).sample(range(n_items), n_labeled))
    chosen = set(labeled)
    return {"labeled": labeled, "unlabeled": [i for i in range(n_items) if i not in chosen]}


def split_path(cache_dir, dataset_key, setting, seed):
    return osp.join(cache_dir, "splits", dataset_key, f"{setting}_seed{seed}.json")


def cached_split(cache_dir, dataset_key, setting, seed, build_fn, fingerprint):
    """The split from its JSON cache, or `build_fn()` written there atomically.

    `fingerprint` (any JSON value describing the pool) is stored with the split; when
    the data changed, the split is rebuilt with a warning rather than silently reused.
    """
    path = split_path(cache_dir, dataset_key, setting, seed)
    if osp.exists(path):
        with open(path) as f:
            cached = json.load(f)
        if cached.get("fingerprint") == fingerprint:
            return cached["split"]
        _logger.warning("The data under %s changed since %s was written: rebuilding the split", cache_dir, path)
    split = build_fn()
    os.makedirs(osp.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump({"dataset": dataset_key, "setting": setting, "seed": seed, "fingerprint": fingerprint, "split": split}, f)
    os.replace(tmp, path)
    return split
