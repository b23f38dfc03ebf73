"""LE-CLIP dropped into miniature Dassl forks, the way docs/DROP_IN.md tells a user.

Each fork is a folder written by the test: a Dassl-style `train.py` (its own
`extend_cfg`, which replaces the TRAINER.COOP / TRAINER.MAPLE node as the official
forks do), its own trainer (`PixelProbe`, a linear classifier on the pixels) and, for
the MaPLe fork, a vendored `clip` package whose CLIP class wants another signature.
The documented line is added to that train.py, and the fork trains one LE-CLIP
trainer and its own on the embedded world, each writing its log and TensorBoard files.

CI has no Dassl.pytorch: the forks run on the miniature Dassl of `tests/mini_dassl.py`
(Dassl's module layout over LE-CLIP's built-in loop, registries and config, with
Dassl's breakages on current torch planted in it). So the forks run with ENGINE
"dassl", the fixes are applied to that package, and what the forks read (registries,
config, the fork's vendored clip) takes the path it takes under the real Dassl.
"""
import contextlib
import importlib
import os
import os.path as osp
import shutil
import subprocess
import sys
import textwrap

import clip
import mini_dassl
import numpy as np
import pytest

from leclip import __version__, catalogue
from leclip.dassl import ENGINE, EngineError

PLUGIN_LINE = "import leclip.plugin  # noqa: F401  LE-CLIP's trainers and datasets, Dassl fixes for torch 2.x"
ALL_FIXES = ["warmup_verbose", "warmup_resume", "checkpoint_load", "checkpoint_messages", "np_int",
             "logger_console", "resume_without_models", "resume_messages", "logging_disabled", "load_model_val_result"]
TINY_WORLD = ["DATASET.SYNTH.POOL_PER_CLASS", "4", "DATASET.SYNTH.TEST_PER_CLASS", "2", "DATASET.NUM_LABELED", "2",
              "OPTIM.MAX_EPOCH", "1"]

# ---------------------------------------------------------------- miniature forks
FORK_TRAIN = '''
"""A Dassl fork's train.py: its own config node, its own trainers, Dassl's flow."""
import argparse

from dassl.config import get_cfg_default
from dassl.engine import build_trainer
from dassl.utils import collect_env_info, set_random_seed, setup_logger

import trainers.probe  # noqa: F401  the fork's own trainer
{PLUGIN_LINE}


def extend_cfg(cfg):
    from yacs.config import CfgNode as CN

    cfg.TRAINER.{NODE} = CN()  # replaces the node, as the official forks do
{NODE_KEYS}
    cfg.TRAINER.PROBE = CN()
    cfg.TRAINER.PROBE.LR_MULT = 1.0


def main():
    parser = argparse.ArgumentParser()
    for flag in ("--root", "--output-dir", "--trainer", "--config-file", "--dataset-config-file"):
        parser.add_argument(flag, default="")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("opts", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    cfg = get_cfg_default()
    extend_cfg(cfg)
    if args.dataset_config_file:
        cfg.merge_from_file(args.dataset_config_file)
    if args.config_file:
        cfg.merge_from_file(args.config_file)
    cfg.DATASET.ROOT, cfg.OUTPUT_DIR, cfg.SEED = args.root, args.output_dir, args.seed
    cfg.TRAINER.NAME = args.trainer
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    set_random_seed(cfg.SEED)
    setup_logger(cfg.OUTPUT_DIR)
    print(collect_env_info())
    trainer = build_trainer(cfg)
    trainer.train()


if __name__ == "__main__":
    main()
'''

NODE_KEYS = {
    "COOP": {"N_CTX": 16, "CSC": False, "CTX_INIT": "''", "PREC": "'fp16'", "CLASS_TOKEN_POSITION": "'end'"},
    "MAPLE": {"N_CTX": 2, "CTX_INIT": "'a photo of a'", "PREC": "'fp16'", "PROMPT_DEPTH": 9},
}

FORK_PROBE = '''
"""The fork's own trainer: a linear classifier on the pixels, Dassl's evaluator."""
import torch.nn as nn
import torch.nn.functional as F
from dassl.engine import TRAINER_REGISTRY, TrainerX
from dassl.optim import build_lr_scheduler, build_optimizer


@TRAINER_REGISTRY.register()
class PixelProbe(TrainerX):
    def build_model(self):
        height, width = self.cfg.INPUT.SIZE
        self.model = nn.Sequential(nn.Flatten(), nn.Linear(3 * height * width, self.num_classes)).to(self.device)
        self.optim = build_optimizer(self.model, self.cfg.OPTIM)
        self.sched = build_lr_scheduler(self.optim, self.cfg.OPTIM)
        self.register_model("probe", self.model, self.optim, self.sched)

    def forward_backward(self, batch):
        image, label, _ = self.parse_batch_train(batch)
        loss = F.cross_entropy(self.model(image), label)
        self.model_backward_and_update(loss)
        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()
        return {"loss": loss.item()}
'''


def make_fork(root, node, vendored_clip=False):
    """A fork folder with train.py (the documented line added), trainers/probe.py and,
    optionally, a vendored clip package."""
    os.makedirs(osp.join(root, "trainers"))
    keys = "\n".join(f"    cfg.TRAINER.{node}.{key} = {value}" for key, value in NODE_KEYS[node].items())
    train = FORK_TRAIN.replace("{PLUGIN_LINE}", PLUGIN_LINE).replace("{NODE}", node).replace("{NODE_KEYS}", keys)
    for rel, text in (("train.py", train), ("trainers/__init__.py", ""), ("trainers/probe.py", FORK_PROBE)):
        with open(osp.join(root, rel), "w") as f:
            f.write(textwrap.dedent(text))
    if vendored_clip:
        shutil.copytree(osp.dirname(clip.__file__), osp.join(root, "clip"),
                        ignore=shutil.ignore_patterns("model.py", "__pycache__"))
        with open(osp.join(root, "clip", "model.py"), "w") as f:
            f.write(mini_dassl.MAPLE_CLIP_MODEL)


def run_fork(fork, dassl_root, trainer, config_file, data, out, extra=()):
    env = dict(os.environ, PYTHONPATH=str(dassl_root), OMP_NUM_THREADS="1")
    env.pop("LECLIP_ENGINE", None)
    command = [sys.executable, "train.py", "--root", str(data), "--output-dir", str(out), "--trainer", trainer,
               "--dataset-config-file", catalogue.dataset_config("synth_fg"), "--config-file", config_file,
               *TINY_WORLD, *extra]
    return subprocess.run(command, cwd=fork, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def forks(tmp_path_factory):
    root = tmp_path_factory.mktemp("forks")
    mini_dassl.write(str(root / "dassl_pkg"))
    make_fork(str(root / "coop_fork"), "COOP")
    make_fork(str(root / "maple_fork"), "MAPLE", vendored_clip=True)
    return root


def probe_config(tmp_path):
    """The fork's own recipe for its probe (a warm-up epoch: the warm-up fix is exercised)."""
    path = tmp_path / "probe.yaml"
    path.write_text(
        "OPTIM:\n  NAME: sgd\n  LR: 0.01\n  MAX_EPOCH: 1\n  LR_SCHEDULER: cosine\n  WARMUP_EPOCH: 1\n"
        "  WARMUP_TYPE: constant\n  WARMUP_CONS_LR: 0.001\nDATALOADER:\n  TRAIN_X:\n    BATCH_SIZE: 8\n"
    )
    return str(path)


def tensorboard_scalars(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return events.Tags()["scalars"]


@pytest.mark.parametrize("fork_name,ours,own_clip", [("coop_fork", "LECoOp", False), ("maple_fork", "LEMaPLe", True)])
def test_a_fork_trains_ours_and_its_own_on_the_embedded_world(forks, tmp_path, fork_name, ours, own_clip):
    fork = forks / fork_name
    data = forks / "data"  # shared by the forks: the world renders once
    ours_yaml = osp.join(catalogue.CONFIGS, "trainers", ours, "synth.yaml")
    runs = {ours: run_fork(fork, forks / "dassl_pkg", ours, ours_yaml, data, tmp_path / ours),
            "PixelProbe": run_fork(fork, forks / "dassl_pkg", "PixelProbe", probe_config(tmp_path), data,
                                   tmp_path / "probe")}
    for name, done in runs.items():
        assert done.returncode == 0, f"{name}: {done.stderr[-3000:]}"
        # the documented line: LE-CLIP's trainers registered, every Dassl fix applied
        assert f"LE-CLIP {__version__} on dassl: trainers CCD, CFSG, CSA" in done.stdout
        assert f"Dassl fixes applied: {', '.join(ALL_FIXES)}" in done.stdout
    ours_log = (tmp_path / ours / "log.txt").read_text()
    probe_log = (tmp_path / "probe" / "log.txt").read_text()
    # ours: LE-CLIP's open-set evaluator (the dataset's task); the fork's: its own (Classification)
    assert "Finish training" in ours_log and "* closed_accuracy:" in ours_log and "* auroc:" in ours_log
    assert "Finish training" in probe_log and "* accuracy:" in probe_log and "closed_accuracy" not in probe_log
    assert "test/closed_accuracy" in tensorboard_scalars(tmp_path / ours / "tensorboard")
    assert {"train/loss", "test/accuracy"} <= set(tensorboard_scalars(tmp_path / "probe" / "tensorboard"))
    if own_clip:
        assert osp.isdir(fork / "clip")  # the fork's clip shadowed clip-anytorch and LE-CLIP still trained


@pytest.fixture
def installed_dassl(tmp_path):
    """install(broken) makes a miniature Dassl `dassl` for the test; all it patched goes with it."""
    with contextlib.ExitStack() as stack:
        yield lambda broken=True: stack.enter_context(mini_dassl.installed(str(tmp_path / "pkg"), broken))


@pytest.mark.parametrize("broken,selection,expected", [
    (True, "", ALL_FIXES),
    (True, "all", ALL_FIXES),
    (True, "warmup_verbose, np_int", ["warmup_verbose", "np_int"]),
    (True, "none", []),
    (False, "", []),  # a Dassl without the breakages: nothing is patched
])
def test_the_fixes_apply_only_where_needed_and_chosen(installed_dassl, broken, selection, expected):
    from leclip import dassl_compat

    installed_dassl(broken)
    assert dassl_compat.needed() == (ALL_FIXES if broken else [])
    chosen = dassl_compat.selected_fixes(selection)
    assert dassl_compat.patch(chosen) == expected
    assert dassl_compat.patch(chosen) == []  # idempotent
    assert dassl_compat.needed() == [name for name in ALL_FIXES if broken and name not in expected]
    assert ("int" in vars(np)) == ("np_int" in expected)


def test_a_bad_fix_selection_is_one_message():
    from leclip import dassl_compat

    with pytest.raises(ValueError, match="LECLIP_DASSL_FIXES='warmup,np_int': unknown fix warmup; use all, none or a "
                                         f"comma-separated list of {', '.join(ALL_FIXES)}"):
        dassl_compat.selected_fixes("warmup,np_int")


@pytest.mark.skipif(ENGINE == "dassl", reason="Dassl.pytorch is installed: this process runs on it")
def test_the_line_refuses_the_builtin_engine_inside_a_fork(installed_dassl):
    installed_dassl()
    assert "leclip.plugin" not in sys.modules
    with pytest.raises(EngineError, match="LECLIP_ENGINE=builtin, but this train.py runs on Dassl.pytorch"):
        importlib.import_module("leclip.plugin")
