"""Shared fixtures: a small embedded world rendered once per session, and a runner
that trains and tests one trainer on it in-process."""
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


@pytest.fixture
def run_trainer(synth_root, tmp_path):
    """run_trainer(trainer, config_file, opts=(), dataset="synth_fg", setting="5") -> results
    (`viz=True`: as train.py --viz)."""

    def run(trainer, config_file, opts=(), dataset="synth_fg", setting="5", output_dir=None, seed=1, viz=False):
        dataset_yaml = catalogue.dataset_config(dataset)
        if not osp.isabs(config_file):
            config_file = osp.join(catalogue.REPO, config_file)
        cfg = catalogue.setup_cfg(
            config_file,
            dataset_yaml,
            catalogue.setting_opts(dataset, setting) + SMALL_WORLD + list(opts),
            root=synth_root,
            output_dir=output_dir or str(tmp_path / f"{trainer}-{len(list(tmp_path.iterdir()))}"),
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

    return run
