"""FGVC-Aircraft 2013b at the variant level (100 classes); the pool is train + val.

CoOp's layout `fgvc_aircraft/` or the official archive's `fgvc-aircraft-2013b/data/`:
images/<id>.jpg, variants.txt, images_variant_{train,val,test}.txt ("<id> <variant>").
"""
import os.path as osp

from leclip.dassl import DATASET_REGISTRY
from leclip.data import OpenSetDataset, check_images, dataset_root, read_lines

LAYOUTS = ("fgvc_aircraft", osp.join("fgvc-aircraft-2013b", "data"))


def find_root(cfg):
    base = osp.abspath(osp.expanduser(cfg.DATASET.ROOT or "."))
    for layout in LAYOUTS:
        if osp.isfile(osp.join(base, layout, "variants.txt")):
            return dataset_root(cfg, layout)
    return dataset_root(cfg, LAYOUTS[0])  # raises the error naming the expected folder


@DATASET_REGISTRY.register()
class LEFGVCAircraft(OpenSetDataset):
    key = "aircraft"  # the harness's name (configs/datasets/aircraft.yaml)
    table_column = 4  # its place among its task's columns in the whole-paper tables
    # the official numbers of images (scripts/check_dataset.py checks a copy against them)
    official = {"classes": 100, "train": 3334 + 3333, "val": 0, "test": 3333}  # train: the whole pool, train + val
    dataset_dir = "fgvc_aircraft"

    def __init__(self, cfg):
        root = find_root(cfg)
        classnames = read_lines(osp.join(root, "variants.txt"))
        index = {name: k for k, name in enumerate(classnames)}

        def read(split):
            items = []
            for line in read_lines(osp.join(root, f"images_variant_{split}.txt")):
                image_id, variant = line.split(" ", 1)
                if variant not in index:
                    raise ValueError(f"images_variant_{split}.txt names variant {variant!r}, absent from variants.txt")
                items.append((osp.join(root, "images", f"{image_id}.jpg"), index[variant]))
            return items

        pool, test = read("train") + read("val"), read("test")
        check_images([p for p, _ in pool + test], "FGVC-Aircraft")
        self.build(cfg, "aircraft", root, classnames, pool, test)
