"""Shared fixtures: a small embedded world rendered once per session, and a runner
that trains and tests one trainer on it in-process."""
import functools
import os.path as osp
import sys

import pytest
import torch

from leclip import catalogue, runner

# a small world keeps every end-to-end run to seconds on 2 CPU cores
SMALL_WORLD = ["DATASET.SYNTH.POOL_PER_CLASS", "20", "DATASET.SYNTH.TEST_PER_CLASS", "10"]


@pytest.fixture(autouse=True, scope="session")
def _single_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("data"))


def run_in(folder, synth_root, trainer, config_file, opts=(), dataset="synth_fg", setting="5", output_dir=None,
           seed=1, viz=False):
    """Train and test `trainer` on the small world, its output in a new folder of `folder`."""
    dataset_yaml = catalogue.dataset_config(dataset)
    if not osp.isabs(config_file):
        config_file = osp.join(catalogue.REPO, config_file)
    cfg = catalogue.setup_cfg(
        config_file,
        dataset_yaml,
        catalogue.setting_opts(dataset, setting) + SMALL_WORLD + list(opts),
        root=synth_root,
        output_dir=output_dir or str(folder / f"{trainer}-{len(list(folder.iterdir()))}"),
        seed=seed,
        trainer=trainer,
    )
    stdout = sys.stdout
    try:
        return runner.run(cfg, viz=viz)
    finally:
        tee = sys.stdout  # the run tees stdout into its log.txt
        tee.flush()
        sys.stdout = stdout
        if tee is not stdout:
            tee.file.close()


@pytest.fixture
def run_trainer(synth_root, tmp_path):
    """run_trainer(trainer, config_file, opts=(), dataset="synth_fg", setting="5") -> results
    (`viz=True`: as train.py --viz)."""
    return functools.partial(run_in, tmp_path, synth_root)
