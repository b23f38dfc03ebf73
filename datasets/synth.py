"""The embedded synthetic benchmarks `SynthFG` (task A) and `SynthML` (tasks B and C).

The world (which images exist) is fixed by `DATASET.SYNTH.WORLD_SEED` and the split
sizes; it is rendered once to `<DATASET.ROOT>/synth_fg/<world>/` (or `synth_ml`) as PNG
files with a manifest. From there both are built like the real benchmarks, with the same
bases, split functions and JSON split cache: the run's `SEED` only picks the labeled subset.
"""
import os.path as osp

from leclip.config import add_defaults
from leclip.dassl import DATASET_REGISTRY
from leclip.data import MultiLabelDataset, OpenSetDataset, register_view
from leclip.data.transforms import to_normalized_tensor
from leclip.world import cache, references, synth_fg, synth_ml, trunk  # noqa: F401 (trunk: CCD's WEIGHTS "embedded")

add_defaults(
    {
        "DATASET.SYNTH.WORLD_SEED": 0,  # fixes every image of both synthetic benchmarks
        "DATASET.SYNTH.POOL_PER_CLASS": 40,  # training images per class (SynthML: x classes in all)
        "DATASET.SYNTH.TEST_PER_CLASS": 20,  # test images per class (SynthML: x classes in all)
    }
)

DEFAULT_ROOT = "data"  # used when DATASET.ROOT is empty: the world needs no download

# the world's label-preserving views for semi-supervised learning on it (no flip, no
# change of hue); "weak" / "strong" (RandAugment) stay the views for real data
register_view("synth_weak", lambda cfg: to_normalized_tensor(cfg, references.view_ops(max(cfg.INPUT.SIZE), False)))
register_view("synth_strong", lambda cfg: to_normalized_tensor(cfg, references.view_ops(max(cfg.INPUT.SIZE), True)))


def rendered_world(cfg, benchmark, classnames, render_train, render_test, train_split="pool"):
    """(folder, manifest) of the configured world, rendered on first use.

    render_train / render_test(world_seed, count_per_class, progress) -> (images, labels)."""
    seed = cfg.DATASET.SYNTH.WORLD_SEED
    pool, test = cfg.DATASET.SYNTH.POOL_PER_CLASS, cfg.DATASET.SYNTH.TEST_PER_CLASS
    for key, value in (("POOL_PER_CLASS", pool), ("TEST_PER_CLASS", test)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"DATASET.SYNTH.{key}={value!r}: use a positive integer")
    root = osp.abspath(osp.expanduser(cfg.DATASET.ROOT or DEFAULT_ROOT))
    folder = osp.join(root, benchmark, f"world{seed}-pool{pool}-test{test}")
    fingerprint = {
        "generator": cache.GENERATOR_VERSION,
        "world_seed": seed,
        "pool_per_class": pool,
        "test_per_class": test,
        "classnames": list(classnames),
    }
    n = len(classnames)
    splits = {
        train_split: (pool * n, lambda progress: render_train(seed, pool, progress)),
        "test": (test * n, lambda progress: render_test(seed, test, progress)),
    }
    return folder, cache.ensure_rendered(folder, fingerprint, splits, desc=benchmark)


def items(folder, manifest, split, label=lambda value: value):
    """[(image path, label)] of one rendered split."""
    return [(osp.join(folder, item["file"]), label(item["label"])) for item in manifest["splits"][split]]


@DATASET_REGISTRY.register()
class SynthFG(OpenSetDataset):
    """Fine-grained open-set classes; the first DATASET.ID_RATIO of them are ID."""

    key = "synth_fg"  # the harness's name (configs/datasets/synth_fg.yaml)
    table_column = 0  # its place among its task's columns in the whole-paper tables
    embedded = True  # rendered on first use: always present, no official counts
    dataset_dir = "synth_fg"

    def __init__(self, cfg):
        folder, manifest = rendered_world(
            cfg,
            self.dataset_dir,
            synth_fg.CLASSNAMES,
            lambda seed, k, progress: synth_fg.render_split(seed, "pool", k, progress=progress),
            lambda seed, k, progress: synth_fg.render_split(seed, "test", k, progress=progress),
        )
        pool, test = items(folder, manifest, "pool"), items(folder, manifest, "test")
        self.build(cfg, "synth_fg", folder, list(synth_fg.CLASSNAMES), pool, test)


@DATASET_REGISTRY.register()
class SynthML(MultiLabelDataset):
    """Multi-object scenes; DATASET.SETTING unsup (task B) or DATASET.LABELED_RATIO > 0 (task C)."""

    key = "synth_ml"  # the harness's name (configs/datasets/synth_ml.yaml)
    table_column = 6  # its place among its task's columns in the whole-paper tables
    embedded = True  # rendered on first use: always present, no official counts
    dataset_dir = "synth_ml"

    def __init__(self, cfg):
        n = len(synth_ml.CLASSNAMES)
        folder, manifest = rendered_world(
            cfg,
            self.dataset_dir,
            synth_ml.CLASSNAMES,
            lambda seed, k, progress: synth_ml.render_split(seed, "train", k * n, progress=progress),
            lambda seed, k, progress: synth_ml.render_split(seed, "test", k * n, progress=progress),
            train_split="train",
        )
        train, test = items(folder, manifest, "train", tuple), items(folder, manifest, "test", tuple)
        self.build(cfg, "synth_ml", folder, list(synth_ml.CLASSNAMES), train, test)
