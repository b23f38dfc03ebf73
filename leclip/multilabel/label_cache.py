"""CLIP's labels of a training set, computed once and kept on disk (CCD and its baselines).

They depend only on the CLIP weights, the class names, the template, the image list and
how CLIP sees each image (`key`), not on the seed or the trainer: every seed and every
task-B baseline reads the same file. The file's name is a digest of the key, and the key
is stored inside it and compared on reading, so a changed input never reads stale
labels. Rank 0 alone reads and writes the file (`leclip.distributed`); an unreadable or
unwritable cache costs a recomputation, never the run.
"""
import hashlib
import json
import os
import os.path as osp

import torch

from .. import distributed
from ..files import write_atomic


def file_digest(path, chunk=1 << 20):
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def key(kind, weights_file, classnames, template, root, impaths, view, clip_scale):
    """What the labels depend on: `kind` (global, cdul-...), the CLIP weights (by content),
    the class names, the template, the images (paths relative to `root`), CLIP's view of
    them (any JSON-able description) and the softmax scale."""
    images = "\n".join(osp.relpath(path, root) for path in impaths)
    return {
        "kind": kind,
        "clip": file_digest(weights_file),
        "classnames": list(classnames),
        "template": template,
        "images": hashlib.sha1(images.encode()).hexdigest(),
        "count": len(impaths),
        "view": view,
        "clip_scale": clip_scale,
    }


def path_of(folder, label_key):
    digest = hashlib.sha1(json.dumps(label_key, sort_keys=True).encode()).hexdigest()[:16]
    return osp.join(folder, f"{label_key['kind']}-{digest}.pt")


def _read(path, label_key):
    if not osp.isfile(path):
        return None
    try:
        cached = torch.load(path, map_location="cpu", weights_only=True)
        if cached.get("key") == label_key:
            print(f"CCD: CLIP's {label_key['kind']} labels from the cache {path}")
            return cached["labels"]
    except (OSError, RuntimeError, ValueError, AttributeError) as err:
        print(f"CCD: unreadable label cache {path} ({err}): computing the labels again")
    return None


def _write(path, label_key, labels):
    try:
        os.makedirs(osp.dirname(path), exist_ok=True)
        write_atomic(path, lambda tmp: torch.save({"key": label_key, "labels": labels}, tmp))
        print(f"CCD: CLIP's {label_key['kind']} labels cached in {path}")
    except OSError as err:
        print(f"CCD: cannot cache CLIP's labels in {path} ({err}; set TRAINER.CCD.CACHE_DIR): they are "
              "computed again on the next run")


def cached(folder, label_key, compute):
    """The labels under `label_key` in `folder`, or `compute()` (run on every rank: it may
    be a sharded pass) written there by rank 0."""
    path = path_of(folder, label_key)
    labels = distributed.on_main(lambda: _read(path, label_key))
    if labels is not None:
        return labels
    labels = compute()
    if distributed.is_main():
        _write(path, label_key, labels)
    return labels
