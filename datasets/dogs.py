"""Stanford Dogs (120 classes): Images/<wnid>-<name>/*.jpg and {train,test}_list.mat,
either in lists/ or at the top level, where the official lists.tar extracts them."""
import os.path as osp

import numpy as np
from scipy.io import loadmat

from leclip.dassl import DATASET_REGISTRY
from leclip.data import OpenSetDataset, check_images, dataset_root, require_file

LIST_FOLDERS = ("lists", "")  # lists/ as in CoOp-style copies; "" = lists.tar extracted in place


def find_list(root, name):
    """<root>/lists/<name> or <root>/<name>; one error naming both when neither exists."""
    for folder in LIST_FOLDERS:
        path = osp.join(root, folder, name)
        if osp.isfile(path):
            return path
    raise FileNotFoundError(
        f"Missing {name}: expected {osp.join(root, 'lists', name)} or {osp.join(root, name)}. Extract the official "
        f"lists.tar into {root} (it holds train_list.mat, test_list.mat and file_list.mat; see DATASETS.md)"
    )


def read_list(path):
    """[(relative path, 0-based label)] from a `file_list` / 1-based `labels` .mat file."""
    mat = loadmat(require_file(path))
    files = [str(np.ravel(entry)[0]) for entry in mat["file_list"].ravel()]
    labels = [int(v) - 1 for v in mat["labels"].ravel()]
    return list(zip(files, labels))


def classnames_from(items):
    """Class k's name from its folder (<wnid>-<name>): 'Japanese_spaniel' -> 'Japanese spaniel'."""
    names = {}
    for path, label in items:
        names.setdefault(label, path.split("/")[0].split("-", 1)[1].replace("_", " "))
    return [names[k] for k in range(len(names))]


@DATASET_REGISTRY.register()
class LEStanfordDogs(OpenSetDataset):
    key = "dogs"  # the harness's name (configs/datasets/dogs.yaml)
    table_column = 1  # its place among its task's columns in the whole-paper tables
    # the official numbers of images (scripts/check_dataset.py checks a copy against them)
    official = {"classes": 120, "train": 12000, "val": 0, "test": 8580}
    dataset_dir = "stanford_dogs"

    def __init__(self, cfg):
        root = dataset_root(cfg, self.dataset_dir)
        train = read_list(find_list(root, "train_list.mat"))
        test = read_list(find_list(root, "test_list.mat"))
        classnames = classnames_from(train + test)
        pool = [(osp.join(root, "Images", p), y) for p, y in train]
        test = [(osp.join(root, "Images", p), y) for p, y in test]
        check_images([p for p, _ in pool + test], "Stanford Dogs")
        self.build(cfg, "dogs", root, classnames, pool, test)
