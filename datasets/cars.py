"""Stanford Cars (196 classes), in the layout CoOp documents.

cars_train/, cars_test/, devkit/cars_meta.mat (`class_names`),
devkit/cars_train_annos.mat and cars_test_annos_withlabels.mat (`annotations` with
`fname` and 1-based `class`). As CoOp does, the model year moves to the front of the
class name ("Tesla Model S Sedan 2012" -> "2012 Tesla Model S Sedan").
"""
import os.path as osp

import numpy as np
from scipy.io import loadmat

from leclip.dassl import DATASET_REGISTRY
from leclip.data import OpenSetDataset, check_images, dataset_root, require_file


def read_classnames(path):
    names = [str(np.ravel(entry)[0]) for entry in loadmat(require_file(path))["class_names"].ravel()]
    return [" ".join([name.split(" ")[-1]] + name.split(" ")[:-1]) for name in names]


def read_annotations(path, image_dir):
    annotations = loadmat(require_file(path))["annotations"].ravel()
    return [(osp.join(image_dir, str(a["fname"].ravel()[0])), int(a["class"].ravel()[0]) - 1) for a in annotations]


@DATASET_REGISTRY.register()
class LEStanfordCars(OpenSetDataset):
    key = "cars"  # the harness's name (configs/datasets/cars.yaml)
    table_column = 2  # its place among its task's columns in the whole-paper tables
    # the official numbers of images (scripts/check_dataset.py checks a copy against them)
    official = {"classes": 196, "train": 8144, "val": 0, "test": 8041}
    dataset_dir = "stanford_cars"

    def __init__(self, cfg):
        root = dataset_root(cfg, self.dataset_dir)
        classnames = read_classnames(osp.join(root, "devkit", "cars_meta.mat"))
        pool = read_annotations(osp.join(root, "devkit", "cars_train_annos.mat"), osp.join(root, "cars_train"))
        test = read_annotations(osp.join(root, "cars_test_annos_withlabels.mat"), osp.join(root, "cars_test"))
        check_images([p for p, _ in pool + test], "Stanford Cars")
        self.build(cfg, "cars", root, classnames, pool, test)
