"""Render a world's splits once to PNG files plus a manifest, under the data root.

The manifest (written last) lists every split's files and labels together with the
fingerprint of the world that drew them. A folder is reused only when its manifest
matches the fingerprint and every listed file exists; otherwise (first use, an
interrupted render, deleted files, another generator version) it is rendered again.
The pixels depend only on the fingerprint, so re-rendering changes nothing.
"""
import json
import os
import os.path as osp

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..files import write_text_atomic

MANIFEST = "manifest.json"
# bump when a change to leclip.world changes the pixels or labels of a split
GENERATOR_VERSION = 4


def load_manifest(folder, fingerprint):
    """The manifest of `folder` if it is complete and drawn by `fingerprint`, else None."""
    path = osp.join(folder, MANIFEST)
    try:
        with open(path) as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return None
    if manifest.get("fingerprint") != fingerprint:
        return None
    for items in manifest["splits"].values():
        if not all(osp.isfile(osp.join(folder, item["file"])) for item in items):
            return None
    return manifest


def ensure_rendered(folder, fingerprint, splits, desc):
    """Manifest of `folder`, rendering it first when needed.

    splits: {name: (count, render_fn)}; render_fn(progress) returns (uint8 images
    [count, H, W, 3], labels [count] or [count, C]) and calls progress(n) as it goes.
    """
    manifest = load_manifest(folder, fingerprint)
    if manifest is not None:
        return manifest
    os.makedirs(folder, exist_ok=True)
    stale = osp.join(folder, MANIFEST)
    if osp.exists(stale):
        os.remove(stale)  # an incomplete folder must never look complete
    manifest = {"fingerprint": fingerprint, "splits": {}}
    total = sum(count for count, _ in splits.values())
    with tqdm(total=2 * total, desc=f"Rendering {desc}", unit="img", leave=False, disable=None) as bar:
        for name, (count, render_fn) in splits.items():
            images, labels = render_fn(bar.update)
            if len(images) != count:
                raise RuntimeError(f"{desc} {name}: rendered {len(images)} images, expected {count}")
            os.makedirs(osp.join(folder, name), exist_ok=True)
            items = []
            for index, (image, label) in enumerate(zip(images, labels)):
                file = f"{name}/{index:05d}.png"
                Image.fromarray(image).save(osp.join(folder, file))
                items.append({"file": file, "label": np.asarray(label).tolist()})
                bar.update(1)
            manifest["splits"][name] = items
    write_text_atomic(osp.join(folder, MANIFEST), json.dumps(manifest))
    return manifest
