"""NUS-WIDE (81 concepts), multi-label: the official Train / Test image lists.

nuswide/Flickr/<concept folder>/<image>, nuswide/ImageList/{Train,Test}Imagelist.txt
(Windows-style paths), nuswide/TrainTestLabels/Labels_<concept>_{Train,Test}.txt (one
0/1 per image) and nuswide/Concepts81.txt. Images known to be missing from most copies
are skipped and counted in the log, never silently.
"""
import logging
import os.path as osp

from leclip.dassl import DATASET_REGISTRY
from leclip.dataset_base import MultiLabelDataset, dataset_root, missing_files, read_lines


@DATASET_REGISTRY.register()
class LENUSWIDE(MultiLabelDataset):
    dataset_dir = "nuswide"

    def __init__(self, cfg):
        root = dataset_root(cfg, self.dataset_dir)
        concepts = read_lines(osp.join(root, "Concepts81.txt"))

        def read(split):
            images = [
                osp.join(root, "Flickr", *line.replace("\\", "/").split("/"))
                for line in read_lines(osp.join(root, "ImageList", f"{split}Imagelist.txt"), "image list")
            ]
            columns = []
            for concept in concepts:
                path = osp.join(root, "TrainTestLabels", f"Labels_{concept}_{split}.txt")
                column = [int(v) for v in read_lines(path, "label file")]
                if len(column) != len(images):
                    raise ValueError(f"{path} has {len(column)} labels for {len(images)} images: re-download it")
                columns.append(column)
            items = [(path, [column[i] for column in columns]) for i, path in enumerate(images)]
            missing = set(missing_files(images))
            if missing:
                logging.getLogger("leclip").warning(
                    "NUS-WIDE %s: skipping %d of %d listed images missing on disk", split, len(missing), len(images)
                )
                print(f"NUS-WIDE {split}: skipped {len(missing)} of {len(images)} listed images missing on disk")
            return [item for item in items if item[0] not in missing]

        self.build(cfg, "nuswide", root, [c.replace("_", " ") for c in concepts], read("Train"), read("Test"))
