"""MS-COCO 2014 (80 classes), multi-label: train2014 / val2014.

coco/{train2014, val2014}/ and coco/annotations/instances_{train,val}2014.json. The
80 category ids (1..90 with gaps) map to contiguous labels in id order. Images with no
annotated object are left out (ours; as the multi-label literature's 82,081 / 40,137).
Parsing a 300 MB instances file takes a while, so the label index is cached next to it
(`<json>.leclip-index.json`, tied to the JSON's size and modification time).
"""
import json
import os
import os.path as osp

from leclip.dassl import DATASET_REGISTRY
from leclip.data import MultiLabelDataset, check_images, dataset_root, multi_hot, require_file
from leclip.files import write_text_atomic


def parse_instances(path):
    """(category names in id order, {file_name: sorted contiguous labels})."""
    with open(require_file(path)) as f:
        try:
            instances = json.load(f)
        except ValueError as err:
            raise ValueError(f"Unreadable COCO annotation file {path}: {err} (re-download it)") from None
    missing = [key for key in ("images", "annotations", "categories") if key not in instances]
    if missing:
        raise ValueError(f"{path} has no {missing}: use COCO's instances_*.json, not captions or keypoints")
    categories = sorted(instances["categories"], key=lambda c: c["id"])
    contiguous = {c["id"]: k for k, c in enumerate(categories)}
    by_image = {}
    for ann in instances["annotations"]:
        if ann["category_id"] not in contiguous:
            raise ValueError(f"{path}: annotation {ann.get('id')} has unknown category id {ann['category_id']}")
        by_image.setdefault(ann["image_id"], set()).add(contiguous[ann["category_id"]])
    labels = {img["file_name"]: sorted(by_image[img["id"]]) for img in instances["images"] if img["id"] in by_image}
    return [c["name"] for c in categories], labels


def read_instances(path):
    """`parse_instances`, through the index cached beside the JSON."""
    stat = os.stat(require_file(path))
    source = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    cache = f"{path}.leclip-index.json"
    if osp.isfile(cache):
        try:
            with open(cache) as f:
                data = json.load(f)
            if data.get("source") == source:
                return data["classnames"], data["labels"]
        except (OSError, ValueError):
            pass  # a damaged index is rebuilt below
    classnames, labels = parse_instances(path)
    try:
        write_text_atomic(cache, json.dumps({"source": source, "classnames": classnames, "labels": labels}))
    except OSError:
        pass  # a read-only dataset folder: parse again next time
    return classnames, labels


@DATASET_REGISTRY.register()
class LECOCO(MultiLabelDataset):
    key = "coco"  # the harness's name (configs/datasets/coco.yaml)
    table_column = 9  # its place among its task's columns in the whole-paper tables
    # the official numbers of images (scripts/check_dataset.py checks a copy against them)
    official = {"classes": 80, "train": 82081, "val": 0, "test": 40137}  # images with at least one object
    dataset_dir = "coco"

    def __init__(self, cfg):
        root = dataset_root(cfg, self.dataset_dir)
        splits = {}
        for split in ("train", "val"):
            classnames, labels = read_instances(osp.join(root, "annotations", f"instances_{split}2014.json"))
            folder = osp.join(root, f"{split}2014")
            splits[split] = [(osp.join(folder, name), multi_hot(ys, len(classnames))) for name, ys in sorted(labels.items())]
        check_images([p for p, _ in splits["train"] + splits["val"]], "COCO 2014")
        self.build(cfg, "coco", root, classnames, splits["train"], splits["val"])
