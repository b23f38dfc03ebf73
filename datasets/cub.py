"""CUB-200-2011 (200 classes): images.txt, image_class_labels.txt, train_test_split.txt, classes.txt."""
import os.path as osp

from leclip.dassl import DATASET_REGISTRY
from leclip.data import OpenSetDataset, check_images, dataset_root, read_lines


def read_table(path):
    return dict(line.split(" ", 1) for line in read_lines(path))


@DATASET_REGISTRY.register()
class LECUB(OpenSetDataset):
    key = "cub"  # the harness's name (configs/datasets/cub.yaml)
    table_column = 3  # its place among its task's columns in the whole-paper tables
    # the official numbers of images (scripts/check_dataset.py checks a copy against them)
    official = {"classes": 200, "train": 5994, "val": 0, "test": 5794}
    dataset_dir = "CUB_200_2011"

    def __init__(self, cfg):
        root = dataset_root(cfg, self.dataset_dir)
        images = read_table(osp.join(root, "images.txt"))
        labels = read_table(osp.join(root, "image_class_labels.txt"))
        is_train = read_table(osp.join(root, "train_test_split.txt"))
        classes = read_table(osp.join(root, "classes.txt"))
        # "001.Black_footed_Albatross" -> "Black footed Albatross"
        classnames = [classes[k].split(".", 1)[1].replace("_", " ") for k in sorted(classes, key=int)]
        pool, test = [], []
        for image_id in sorted(images, key=int):
            item = (osp.join(root, "images", images[image_id]), int(labels[image_id]) - 1)
            (pool if is_train[image_id] == "1" else test).append(item)
        check_images([p for p, _ in pool + test], "CUB-200-2011")
        self.build(cfg, "cub", root, classnames, pool, test)
