"""The registered embedded benchmarks: sizes per setting, and splits that survive a rebuild."""
import os.path as osp
import shutil

from leclip import catalogue
from leclip.dassl import build_dataset

SMALL = ["DATASET.SYNTH.POOL_PER_CLASS", "10", "DATASET.SYNTH.TEST_PER_CLASS", "4", "VERBOSE", "False"]


def load(key, setting, root, seed=1):
    cfg = catalogue.setup_cfg(
        dataset_config_file=catalogue.dataset_config(key),
        opts=catalogue.setting_opts(key, setting) + SMALL,
        root=str(root),
        seed=seed,
    )
    return build_dataset(cfg)


def relative(data, root):
    return sorted(osp.relpath(d.impath, root) for d in data)


def test_synth_fg_sizes(tmp_path):
    data = load("synth_fg", "5", tmp_path)
    classes = len(data.all_classnames)
    assert data.task == "ossl" and data.num_classes == classes // 2
    assert len(data.train_x) == 5 * data.num_classes
    assert len(data.train_x) + len(data.train_u) == 10 * classes
    assert len(data.test) == 4 * classes
    assert {d.label for d in data.train_u} == set(range(classes))  # ID and OOD in the pool


def test_synth_ml_sizes(tmp_path):
    unsup = load("synth_ml", "unsup", tmp_path)
    pool = 10 * unsup.num_classes
    assert unsup.task == "multilabel" and unsup.train_x == [] and len(unsup.train_u) == pool
    ratio = load("synth_ml", "0.1", tmp_path)
    assert len(ratio.train_x) == round(0.1 * pool) and len(ratio.train_x) + len(ratio.train_u) == pool


def test_rebuilding_the_cache_keeps_every_split(tmp_path):
    first_fg, first_ml = load("synth_fg", "5", tmp_path), load("synth_ml", "0.1", tmp_path)
    shutil.rmtree(tmp_path / "synth_fg")  # images, manifest and split JSON all rebuilt
    shutil.rmtree(tmp_path / "synth_ml")
    again_fg, again_ml = load("synth_fg", "5", tmp_path), load("synth_ml", "0.1", tmp_path)
    assert relative(again_fg.train_x, tmp_path) == relative(first_fg.train_x, tmp_path)
    assert relative(again_ml.train_x, tmp_path) == relative(first_ml.train_x, tmp_path)
    assert relative(load("synth_fg", "5", tmp_path, seed=2).train_x, tmp_path) != relative(first_fg.train_x, tmp_path)
