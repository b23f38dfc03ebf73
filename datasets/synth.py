"""The embedded synthetic benchmarks `SynthFG` (task A) and `SynthML` (tasks B and C).

The world (which images exist) is fixed by `DATASET.SYNTH.WORLD_SEED` and the split
sizes; it is rendered once to `<DATASET.ROOT>/synth_fg/<world>/` (or `synth_ml`) as PNG
files with a manifest. The run's `SEED` only picks the labeled subset, with the same
split functions and JSON cache as the real benchmarks.
"""
import os.path as osp

from leclip import splits
from leclip.config import add_defaults
from leclip.dassl import DATASET_REGISTRY, Datum
from leclip.dataset_base import LEDatasetBase
from leclip.world import cache, synth_fg, synth_ml

add_defaults(
    {
        "DATASET.SYNTH.WORLD_SEED": 0,  # fixes every image of both synthetic benchmarks
        "DATASET.SYNTH.POOL_PER_CLASS": 40,  # training images per class (SynthML: x classes in all)
        "DATASET.SYNTH.TEST_PER_CLASS": 20,  # test images per class (SynthML: x classes in all)
    }
)

DEFAULT_ROOT = "data"  # used when DATASET.ROOT is empty: the world needs no download


def _world(cfg, benchmark, classnames):
    """(folder, fingerprint, pool size, test size) of the configured world."""
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
    return folder, fingerprint, pool, test


def _run_seed(cfg):
    if cfg.SEED < 0:
        raise ValueError(f"SEED={cfg.SEED}: the labeled subset is drawn with the run's seed; set SEED >= 0 (e.g. 1)")
    return cfg.SEED


@DATASET_REGISTRY.register()
class SynthFG(LEDatasetBase):
    """24 fine-grained classes; the first DATASET.ID_RATIO of them are ID."""

    dataset_dir = "synth_fg"

    def __init__(self, cfg):
        num_labeled = cfg.DATASET.NUM_LABELED
        if num_labeled < 1:
            raise ValueError(f"DATASET.NUM_LABELED={num_labeled}: SynthFG needs labels per ID class (5 or 20)")
        folder, fingerprint, pool, test = _world(cfg, self.dataset_dir, synth_fg.CLASSNAMES)
        seed = cfg.DATASET.SYNTH.WORLD_SEED
        manifest = cache.ensure_rendered(
            folder,
            fingerprint,
            {
                "pool": (pool * len(synth_fg.CLASSES), lambda p: synth_fg.render_split(seed, "pool", pool, progress=p)),
                "test": (test * len(synth_fg.CLASSES), lambda p: synth_fg.render_split(seed, "test", test, progress=p)),
            },
            desc="synth_fg",
        )
        pool_items = manifest["splits"]["pool"]
        pool_labels = [item["label"] for item in pool_items]
        run_seed = _run_seed(cfg)
        split = splits.cached_split(
            folder,
            "synth_fg",
            f"id{cfg.DATASET.ID_RATIO:g}_n{num_labeled}",
            run_seed,
            lambda: splits.open_set_split(pool_labels, len(synth_fg.CLASSES), cfg.DATASET.ID_RATIO, num_labeled, run_seed),
            fingerprint,
        )
        num_id = split["num_id"]
        self.all_classnames = list(synth_fg.CLASSNAMES)
        self.task = "ossl"

        def datum(item):
            return Datum(osp.join(folder, item["file"]), item["label"], classname=self.all_classnames[item["label"]])

        train_x = [datum(pool_items[i]) for i in split["labeled"]]
        train_u = [datum(pool_items[i]) for i in split["unlabeled"]]
        test_set = [datum(item) for item in manifest["splits"]["test"]]
        super().__init__(train_x=train_x, train_u=train_u, test=test_set, classnames=self.all_classnames[:num_id])


@DATASET_REGISTRY.register()
class SynthML(LEDatasetBase):
    """16 object classes in 1-4-object scenes; DATASET.SETTING unsup (task B) or
    DATASET.LABELED_RATIO > 0 (task C)."""

    dataset_dir = "synth_ml"

    def __init__(self, cfg):
        ratio = cfg.DATASET.LABELED_RATIO
        unsup = cfg.DATASET.SETTING == "unsup"
        if unsup == (ratio > 0) or not 0 <= ratio <= 1:
            raise ValueError(
                f"SynthML with DATASET.SETTING={cfg.DATASET.SETTING!r} and DATASET.LABELED_RATIO={ratio}: "
                "set either DATASET.SETTING unsup (task B) or DATASET.LABELED_RATIO in (0, 1] (task C)"
            )
        folder, fingerprint, pool, test = _world(cfg, self.dataset_dir, synth_ml.CLASSNAMES)
        seed = cfg.DATASET.SYNTH.WORLD_SEED
        num_classes = len(synth_ml.CLASSNAMES)
        manifest = cache.ensure_rendered(
            folder,
            fingerprint,
            {
                "train": (pool * num_classes, lambda p: synth_ml.render_split(seed, "train", pool * num_classes, progress=p)),
                "test": (test * num_classes, lambda p: synth_ml.render_split(seed, "test", test * num_classes, progress=p)),
            },
            desc="synth_ml",
        )
        train_items = manifest["splits"]["train"]
        if unsup:
            split = {"labeled": [], "unlabeled": list(range(len(train_items)))}
        else:
            run_seed = _run_seed(cfg)
            split = splits.cached_split(
                folder,
                "synth_ml",
                f"ratio{ratio:g}",
                run_seed,
                lambda: splits.labeled_ratio_split(len(train_items), ratio, run_seed),
                fingerprint,
            )
        self.all_classnames = list(synth_ml.CLASSNAMES)
        self.task = "multilabel"

        def datum(item):
            return Datum(osp.join(folder, item["file"]), tuple(item["label"]))

        train_x = [datum(train_items[i]) for i in split["labeled"]]
        train_u = [datum(train_items[i]) for i in split["unlabeled"]]
        test_set = [datum(item) for item in manifest["splits"]["test"]]
        super().__init__(train_x=train_x, train_u=train_u, test=test_set, classnames=self.all_classnames)
