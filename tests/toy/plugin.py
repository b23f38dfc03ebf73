"""A toy method and a toy benchmark, each one class with its declarations and one YAML
beside it: what docs/INTERNALS.md walks a contributor through, kept out of the shared
files (`config_dir` / `config_file` point here instead of configs/)."""
import os
import os.path as osp

from PIL import Image

from leclip.data import OpenSetDataset, dataset_root
from leclip.dassl import DATASET_REGISTRY, TRAINER_REGISTRY
from leclip.trainers.zsclip import LEZeroshotCLIP

HERE = osp.dirname(osp.abspath(__file__))
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 220, 30)}


def draw(root, pool=6, test=3):
    """<root>/toy_shapes/<split>/<colour>_<i>.png: plain squares of each colour."""
    for split, count in (("pool", pool), ("test", test)):
        os.makedirs(osp.join(root, "toy_shapes", split), exist_ok=True)
        for colour, rgb in COLOURS.items():
            for i in range(count):
                shade = tuple(max(0, c - 8 * i) for c in rgb)
                Image.new("RGB", (64, 64), shade).save(osp.join(root, "toy_shapes", split, f"{colour}_{i}.png"))


class ToyShapes(OpenSetDataset):
    key = "toy_shapes"
    table_column = 99
    paper_settings = ("2",)
    official = {"classes": 4, "train": 24, "val": 0, "test": 12}
    config_file = osp.join(HERE, "toy_shapes.yaml")
    dataset_dir = "toy_shapes"

    def __init__(self, cfg):
        root = dataset_root(cfg, self.dataset_dir)
        names = list(COLOURS)

        def items(split):
            files = sorted(os.listdir(osp.join(root, split)))
            return [(osp.join(root, split, f), names.index(f.split("_")[0])) for f in files]

        self.build(cfg, self.key, root, [f"{n} square" for n in names], items("pool"), items("test"))


class ToyCLIP(LEZeroshotCLIP):
    methods = {"toy": "Toy zero-shot"}
    table_row = 99
    tasks = ("A",)
    config_dir = osp.join(HERE, "ToyCLIP")


def register():
    DATASET_REGISTRY.register(ToyShapes)
    TRAINER_REGISTRY.register(ToyCLIP)


def unregister():
    for registry, name in ((DATASET_REGISTRY, "ToyShapes"), (TRAINER_REGISTRY, "ToyCLIP")):
        registry._obj_map.pop(name, None)
