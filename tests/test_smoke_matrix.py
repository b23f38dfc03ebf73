"""The smoke matrix: every (method, benchmark, setting) of the three papers' tables.

Every case resolves its recipe, then trains one epoch and evaluates through the harness,
as `scripts/run.sh` would, on a miniature replica of the benchmark's on-disk layout at
its real image size, with a reduced-width CLIP of the official architecture stored as
TorchScript under its official name in a clip cache. A case takes under a CPU second, a
CCD case (a ResNet-50 at 448 px) 4 to 7: CI trains one case of each CCD method, every
task-B benchmark among them; `scripts/smoke_matrix.py` runs every case, one line a case.
"""
import glob
import importlib.util
import math
import os
import os.path as osp

import pytest

from leclip import catalogue

SCRIPT = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), "scripts", "smoke_matrix.py")
spec = importlib.util.spec_from_file_location("smoke_matrix", SCRIPT)
smoke = importlib.util.module_from_spec(spec)
spec.loader.exec_module(smoke)

CASES = smoke.cases()


def has_real_recipe(trainer):
    """CCD's real-benchmark recipes are written beside its trainer (configs/trainers/CCD/)."""
    folder = osp.join(catalogue.CONFIGS, "trainers", trainer)
    return any(not name.startswith("synth") for name in os.listdir(folder) if name.endswith(".yaml"))


# A CCD case trains and evaluates a ResNet-50 at 448 px, 4 to 7 CPU seconds, ten times another case:
# CI runs one case of each method of the CCD trainer (all 24 would double this file's time), every
# task-B benchmark among them; scripts/smoke_matrix.py runs all of them.
CCD_IN_CI = {
    ("ccd", "voc2012", "unsup"), ("bce_full", "voc2007", "unsup"), ("an", "coco", "unsup"),
    ("an_ls", "nuswide", "unsup"), ("role", "voc2007", "unsup"), ("cdul", "coco", "unsup"),
}


def case_param(method, dataset, setting, step=False):
    trainer = catalogue.methods()[method].trainer
    marks = ()
    if trainer == "CCD" and not has_real_recipe(trainer):
        marks = pytest.mark.skip(reason=f"{trainer} has no real-benchmark recipe yet")
    elif trainer == "CCD" and step and (method, dataset, setting) not in CCD_IN_CI:
        marks = pytest.mark.skip(reason="one case per CCD method in CI: python scripts/smoke_matrix.py runs all")
    return pytest.param(method, dataset, setting, marks=marks, id=f"{method}-{dataset}-{setting}")


def test_ci_steps_every_method_and_benchmark():
    """Every method of the tables trains in CI on at least one benchmark, and every benchmark is stepped."""
    stepped = [case for case in CASES if catalogue.methods()[case[0]].trainer != "CCD" or case in CCD_IN_CI]
    assert CCD_IN_CI <= set(CASES)
    assert {m for m, _, _ in stepped} == set(catalogue.methods())
    assert {d for _, d, _ in stepped} == set(smoke.REPLICAS)
    assert {d for m, d, _ in CCD_IN_CI} == set(smoke.UNSUP_REPLICAS)


def test_the_matrix_is_every_paper_table():
    assert len(CASES) == 8 * 10 + 7 * 4 + 4 * 16  # task A: 4 benchmarks x 2 + Semi-Aves x 2; B; C: 4 ratios
    assert {m for m, _, _ in CASES} == set(catalogue.methods())
    assert {d for _, d, _ in CASES} == set(smoke.REPLICAS)


@pytest.mark.parametrize("method, dataset, setting", [case_param(*case) for case in CASES])
def test_every_case_resolves_its_recipe(method, dataset, setting):
    catalogue.check_serves(method, dataset, setting)
    files = catalogue.trainer_configs(method, dataset)
    cfg = catalogue.setup_cfg(files, catalogue.dataset_config(dataset), catalogue.setting_opts(dataset, setting))
    assert not any(osp.basename(f).startswith("synth") for f in files)
    assert not cfg.MODEL.BACKBONE.NAME.startswith("synth")  # never the embedded world's CLIP
    assert cfg.DATALOADER.NUM_WORKERS > 0


@pytest.fixture(scope="module")
def user_machine(tmp_path_factory):
    """The replicas of every benchmark and a clip cache of the recipes' backbones."""
    root = str(tmp_path_factory.mktemp("data"))
    smoke.build_replicas(root, CASES)
    cache = smoke.clip_cache(osp.join(root, "clip"), smoke.backbones(CASES))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LECLIP_CLIP_CACHE", cache)
        yield root


@pytest.mark.parametrize("method, dataset, setting", [case_param(*case, step=True) for case in CASES])
def test_one_step_and_an_evaluation(user_machine, method, dataset, setting):
    out = osp.join(user_machine, "out", method, dataset, setting)
    results, _ = smoke.run_case(method, dataset, setting, user_machine, out)
    task = catalogue.task_of_setting(dataset, setting)
    for metric in catalogue.task_metrics(task):
        if metric in ("final_mAP",) or (metric == "auroc" and dataset == "semiaves"):
            continue  # CCD's last model (its own test); Semi-Aves' test set has no OOD image
        assert isinstance(results[metric], float) and math.isfinite(results[metric]), metric
    assert results["backbone"] == catalogue.setup_cfg(catalogue.trainer_configs(method, dataset)).MODEL.BACKBONE.NAME
    with open(osp.join(out, "log.txt")) as log:
        text = log.read()
    if method == "zsclip":
        assert "batch [" not in text  # nothing trains
    else:
        assert "batch [1/" in text and glob.glob(osp.join(out, "*", "model.pth.tar-1"))


def test_a_state_dict_under_the_official_name_loads_by_name_like_the_torchscript(user_machine, tmp_path, monkeypatch):
    """The two formats a user's cache may hold (OpenAI's TorchScript download, or weights
    saved with torch.save) give the same model by its usual name."""
    import torch

    from leclip.backbone import load_clip

    official = load_clip("ViT-B/16")
    torch.save(official.state_dict(), tmp_path / "ViT-B-16.pt")
    monkeypatch.setenv("LECLIP_CLIP_CACHE", str(tmp_path))
    from_state_dict = load_clip("ViT-B/16")
    images, tokens = torch.randn(2, 3, 224, 224), torch.randint(0, 49408, (2, 77))
    assert torch.equal(official.encode_image(images), from_state_dict.encode_image(images))
    assert torch.equal(official.encode_text(tokens), from_state_dict.encode_text(tokens))
