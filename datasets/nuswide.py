"""NUS-WIDE (81 concepts), multi-label: the official Train / Test image lists.

nuswide/Flickr/<concept folder>/<image>, nuswide/ImageList/{Train,Test}Imagelist.txt
(Windows-style paths), the label files Labels_<concept>_{Train,Test}.txt (one 0/1 per
image) in nuswide/TrainTestLabels/ or, as the official download has them, in
nuswide/Groundtruth/TrainTestLabels/, and Concepts81.txt in nuswide/ or (official)
nuswide/ConceptsList/. Images known to be missing from most copies are skipped and
counted in the log, never silently.
"""
import os.path as osp

import numpy as np

from leclip.dassl import DATASET_REGISTRY
from leclip.data import MultiLabelDataset, dataset_root, missing_files, read_lines, require_file

# where each file is in the copies we know, first match wins (the official download last)
LABEL_FOLDERS = ("TrainTestLabels", osp.join("Groundtruth", "TrainTestLabels"))
CONCEPT_FILES = ("Concepts81.txt", osp.join("ConceptsList", "Concepts81.txt"))


def first_present(root, candidates, what):
    for candidate in candidates:
        if osp.exists(osp.join(root, candidate)):
            return osp.join(root, candidate)
    raise FileNotFoundError(
        f"Missing NUS-WIDE {what}: expected one of {', '.join(osp.join(root, c) for c in candidates)} "
        "(extract the official Groundtruth and ConceptsList archives into nuswide/; see DATASETS.md)"
    )


def read_label_column(path, num_images):
    """One concept's 0/1 per listed image, parsed as bytes (162 files of up to 161k lines)."""
    with open(require_file(path, "label file"), "rb") as f:
        values = f.read().split()
    if len(values) != num_images:
        raise ValueError(f"{path} has {len(values)} labels for {num_images} listed images: re-download it")
    joined = b"".join(values)
    column = np.frombuffer(joined, dtype=np.uint8) - ord("0")
    if len(joined) != num_images or column.max(initial=0) > 1:
        raise ValueError(f"{path} holds values other than 0 and 1: re-download it")
    return column


@DATASET_REGISTRY.register()
class LENUSWIDE(MultiLabelDataset):
    key = "nuswide"  # the harness's name (configs/datasets/nuswide.yaml)
    table_column = 10  # its place among its task's columns in the whole-paper tables
    # the official numbers of images (scripts/check_dataset.py checks a copy against them)
    official = {"classes": 81, "train": 161789, "val": 0, "test": 107859}  # as listed; most copies miss some images
    dataset_dir = "nuswide"

    def __init__(self, cfg):
        root = dataset_root(cfg, self.dataset_dir)
        concepts = read_lines(first_present(root, CONCEPT_FILES, "concept list"))
        labels_dir = first_present(root, LABEL_FOLDERS, "label folder")
        listed, self.missing_images = {}, {}  # per split; check_dataset.py reports them

        def read(split):
            images = [
                osp.join(root, "Flickr", *line.replace("\\", "/").split("/"))
                for line in read_lines(osp.join(root, "ImageList", f"{split}Imagelist.txt"), "image list")
            ]
            labels = np.stack(
                [
                    read_label_column(osp.join(labels_dir, f"Labels_{concept}_{split}.txt"), len(images))
                    for concept in concepts
                ],
                axis=1,
            )
            missing = set(missing_files(images))
            listed[split], self.missing_images[split] = len(images), len(missing)
            return [(path, row) for path, row in zip(images, map(tuple, labels.tolist())) if path not in missing]

        train, test = read("Train"), read("Test")
        if any(self.missing_images.values()):
            counts = " and ".join(f"{self.missing_images[s]:,} of {listed[s]:,} {s}" for s in listed)
            # one counted warning, printed so that it lands in the run's log.txt on either engine
            print(f"Warning: NUS-WIDE skipped {counts} listed images missing on disk")
        self.build(cfg, "nuswide", root, [c.replace("_", " ") for c in concepts], train, test)
