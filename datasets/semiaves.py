"""Semi-Aves (FGVC7 2020): 200 ID species plus out-of-class unlabeled images.

l_train.txt, val.txt, u_train_in.txt, u_train_out.txt, test.txt ("relative/path label",
unlabeled label -1). Setting `in`: unlabeled = U_in; `inout`: U_in + U_out. All K
classes (200) are ID. The hidden label of a U_in image is unknown (-1, skipped by
diagnostics); U_out images get the single out-of-class index K (>= K, i.e. OOD). Class
names for prompts come from an optional classnames.txt (one per line, label order);
without it, "species <k>".
"""
import logging
import os.path as osp

from leclip.dassl import DATASET_REGISTRY
from leclip.dataset_base import OpenSetDataset, check_images, dataset_root, read_lines


def read_split(root, name, label=None):
    items = []
    for line in read_lines(osp.join(root, f"{name}.txt")):
        path, given = line.rsplit(" ", 1)
        items.append((osp.join(root, path), int(given) if label is None else label))
    return items


@DATASET_REGISTRY.register()
class LESemiAves(OpenSetDataset):
    dataset_dir = "semi_aves"

    def __init__(self, cfg):
        setting = cfg.DATASET.SETTING
        if setting not in ("in", "inout"):
            raise ValueError(f"DATASET.SETTING={setting!r}: Semi-Aves uses 'in' (U_in) or 'inout' (U_in + U_out)")
        root = dataset_root(cfg, self.dataset_dir)
        labeled, val, test = read_split(root, "l_train"), read_split(root, "val"), read_split(root, "test")
        num_classes = 1 + max(label for _, label in labeled + val + test)
        names_file = osp.join(root, "classnames.txt")
        if osp.isfile(names_file):
            classnames = read_lines(names_file)
            if len(classnames) != num_classes:
                raise ValueError(f"{names_file} lists {len(classnames)} names for {num_classes} classes")
        else:
            logging.getLogger("leclip").warning("%s not found: prompts use 'species <k>'", names_file)
            classnames = [f"species {k}" for k in range(num_classes)]
        unlabeled = read_split(root, "u_train_in", label=-1)
        if setting == "inout":
            unlabeled += read_split(root, "u_train_out", label=num_classes)
        check_images([p for p, _ in labeled + val + test + unlabeled], "Semi-Aves")
        self.all_classnames = classnames + ["out-of-class"]
        self.finish(labeled, unlabeled, test, val, classnames)
