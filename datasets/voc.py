"""PASCAL VOC 2007 (trainval / test) and 2012 (train / val), 20 classes, multi-label.

VOCdevkit/VOC20xx/{JPEGImages, Annotations, ImageSets/Main/<split>.txt}. A class is
positive when any object of it is annotated, difficult ones included (ours).
"""
import os.path as osp
import xml.etree.ElementTree as ET

from leclip.dassl import DATASET_REGISTRY
from leclip.data import MultiLabelDataset, check_images, dataset_root, multi_hot, read_lines, require_file

CLASSES = [
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
]
# the words the prompts use
PROMPT_NAMES = {"diningtable": "dining table", "pottedplant": "potted plant", "tvmonitor": "tv monitor"}


def read_objects(path):
    try:
        root = ET.parse(require_file(path)).getroot()
    except ET.ParseError as err:
        raise ValueError(f"Unreadable VOC annotation {path}: {err} (re-extract the archive)") from None
    names = [obj.findtext("name", "").strip() for obj in root.iter("object")]
    unknown = [n for n in names if n not in CLASSES]
    if unknown:
        raise ValueError(f"{path} names unknown VOC classes {unknown}")
    return names


class VOCBase(MultiLabelDataset):
    year = ""
    splits = ("", "")

    def __init__(self, cfg):
        root = dataset_root(cfg, osp.join("VOCdevkit", f"VOC{self.year}"))
        index = {name: k for k, name in enumerate(CLASSES)}

        def read(split):
            items = []
            for image_id in read_lines(osp.join(root, "ImageSets", "Main", f"{split}.txt"), "image list"):
                names = read_objects(osp.join(root, "Annotations", f"{image_id}.xml"))
                items.append((osp.join(root, "JPEGImages", f"{image_id}.jpg"), multi_hot({index[n] for n in names}, 20)))
            return items

        train, test = read(self.splits[0]), read(self.splits[1])
        check_images([p for p, _ in train + test], f"VOC{self.year}")
        self.build(cfg, f"voc{self.year}", root, [PROMPT_NAMES.get(c, c) for c in CLASSES], train, test)


@DATASET_REGISTRY.register()
class LEVOC2007(VOCBase):
    key = "voc2007"  # the harness's name (configs/datasets/voc2007.yaml)
    table_column = 7  # its place among its task's columns in the whole-paper tables
    # the official numbers of images (scripts/check_dataset.py checks a copy against them)
    official = {"classes": 20, "train": 5011, "val": 0, "test": 4952}
    year, splits = "2007", ("trainval", "test")


@DATASET_REGISTRY.register()
class LEVOC2012(VOCBase):
    key = "voc2012"  # the harness's name (configs/datasets/voc2012.yaml)
    table_column = 8  # its place among its task's columns in the whole-paper tables
    # the official numbers of images (scripts/check_dataset.py checks a copy against them)
    official = {"classes": 20, "train": 5717, "val": 0, "test": 5823}
    year, splits = "2012", ("train", "val")
