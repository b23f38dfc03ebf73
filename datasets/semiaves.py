"""Semi-Aves (FGVC7 2020): 200 ID species plus out-of-class unlabeled images.

semi_aves/{l_train,val,u_train_in,u_train_out,test}.txt ("relative/path label",
unlabeled label -1), as the benchmark's authors ship them (cvl-umass/ssl-evaluation,
data/semi_aves/). Setting `in`: unlabeled = U_in; `inout`: U_in + U_out. All K = 200
classes are ID. U_out images get the single out-of-class index K (>= K, i.e. OOD). A
U_in image's hidden label (diagnostics only) comes from `u_train_in_oracle.txt` when it
is there, else it is -1 (unknown). Species names for the prompts come from the first
name file found in semi_aves/, beside it or in semi_aves/annotation/ (where the
semi-inat-2020 annotation archive puts it): `semi_aves_species_names.txt` (ssl-evaluation)
or `semi_aves_class_names.txt` (semi-inat-2020), both "k Genus_species" per line, or
`classnames.txt` (one name per line), else "species k".
"""
import logging
import os.path as osp

from leclip.dassl import DATASET_REGISTRY
from leclip.data import OpenSetDataset, check_images, dataset_root, read_lines, reject_set_keys

NAME_FILES = ("semi_aves_species_names.txt", "semi_aves_class_names.txt", "classnames.txt")


def read_split(root, name):
    items = []
    path = osp.join(root, f"{name}.txt")
    for line in read_lines(path):
        image, _, label = line.rpartition(" ")
        if not image or not label.lstrip("-").isdigit():
            raise ValueError(f"{path}: line {line!r} is not 'relative/path label' (re-download the split files)")
        items.append((osp.join(root, image), int(label)))
    return items


def read_classnames(root, num_classes):
    """Species names in label order, from the first name file present in semi_aves/, beside
    it or in semi_aves/annotation/."""
    for folder in (root, osp.dirname(root), osp.join(root, "annotation")):
        for name in NAME_FILES:
            path = osp.join(folder, name)
            if not osp.isfile(path):
                continue
            lines = read_lines(path)
            if len(lines) != num_classes:
                raise ValueError(f"{path} lists {len(lines)} names for {num_classes} classes: use the file for Semi-Aves")
            # "12 Tachybaptus_novaehollandiae" (space or tab) -> "Tachybaptus novaehollandiae"
            fields = [line.split(None, 1) for line in lines]
            numbered = all(len(f) == 2 and f[0] == str(k) for k, f in enumerate(fields))
            return [(f[1] if numbered else line).replace("_", " ") for f, line in zip(fields, lines)]
    logging.getLogger("leclip").warning(
        "No %s in %s: prompts use 'species <k>' (see DATASETS.md)", " or ".join(NAME_FILES), root
    )
    return [f"species {k}" for k in range(num_classes)]


@DATASET_REGISTRY.register()
class LESemiAves(OpenSetDataset):
    key = "semiaves"  # the harness's name (configs/datasets/semiaves.yaml)
    table_column = 5  # its place among its task's columns in the whole-paper tables
    # the official numbers of images (scripts/check_dataset.py checks a copy against them)
    official = {"classes": 200, "train": 3959 + 26640 + 122208, "val": 2000, "test": 8000}  # train: l_train + U_in + U_out
    # its settings are names (DATASET.SETTING): unlabeled U_in, or U_in + U_out; the paper reports both
    named_settings = paper_settings = ("in", "inout")
    dataset_dir = "semi_aves"

    def __init__(self, cfg):
        setting = cfg.DATASET.SETTING
        if setting not in ("in", "inout"):
            raise ValueError(f"DATASET.SETTING={setting!r}: Semi-Aves uses 'in' (U_in) or 'inout' (U_in + U_out)")
        reject_set_keys(
            cfg,
            {"DATASET.NUM_LABELED": -1, "DATASET.LABELED_RATIO": 0.0},
            "Semi-Aves' labeled set is l_train: its setting is DATASET.SETTING in | inout",
        )
        root = dataset_root(cfg, self.dataset_dir)
        labeled, val, test = read_split(root, "l_train"), read_split(root, "val"), read_split(root, "test")
        num_classes = 1 + max(label for _, label in labeled + val + test)
        classnames = read_classnames(root, num_classes)
        unlabeled = read_split(root, "u_train_in")
        oracle_file = osp.join(root, "u_train_in_oracle.txt")
        oracle = dict(read_split(root, "u_train_in_oracle")) if osp.isfile(oracle_file) else {}
        unlabeled = [(path, oracle.get(path, -1)) for path, _ in unlabeled]
        if setting == "inout":
            unlabeled += [(path, num_classes) for path, _ in read_split(root, "u_train_out")]
        check_images([p for p, _ in labeled + val + test + unlabeled], "Semi-Aves")
        self.all_classnames = classnames + ["out-of-class"]
        self.finish(labeled, unlabeled, test, val, classnames)
