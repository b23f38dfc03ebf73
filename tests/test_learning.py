"""Every task-A baseline on the embedded world: a short run beats the untrained model,
and the shared FixMatch recipe runs it on the unlabeled pool; CFSG-CLIP with its whole
synth recipe beats zero-shot CLIP (world v3 has headroom above it); CCD's classifier
learns from CLIP's labels and, from 1,600 scenes, beats zero-shot CLIP.
(CFSG-CLIP and zero-shot CLIP also have their own end-to-end tests.)"""
import re

import pytest
import torch
from conftest import run_in

TRAINERS = ["LECoOp", "LELoCoOp", "LEPLOT", "LECLIPAdapter", "LEMaPLe", "LECLIPLoRA"]


def config(trainer):
    return f"configs/trainers/{trainer}/synth.yaml"


@pytest.mark.parametrize("trainer", TRAINERS)
def test_learns_on_the_embedded_world(run_trainer, trainer):
    # 20 labels a class: with 5, CLIP-Adapter and CLIP-LoRA, which start as zero-shot CLIP,
    # stay level with it on this world (README, task A)
    untrained = run_trainer(trainer, config(trainer), ["OPTIM.MAX_EPOCH", "0"], setting="20")
    trained = run_trainer(trainer, config(trainer), ["OPTIM.MAX_EPOCH", "8"], setting="20")
    assert trained["closed_accuracy"] > untrained["closed_accuracy"] + 2


@pytest.mark.parametrize("trainer", TRAINERS)
def test_fixmatch_trains_on_the_unlabeled_pool(run_trainer, tmp_path, trainer):
    """Same seed and labeled batches; with FixMatch the filter passes some unlabeled
    images and their loss changes the learned weights (a masked-out or missing unlabeled
    term would leave them bit-identical to the labeled-only run)."""
    runs = {}
    for mode in ("none", "fixmatch"):
        out = tmp_path / mode
        opts = ["OPTIM.MAX_EPOCH", "1", "TRAINER.SSL.MODE", mode, "TRAINER.SSL.CONF_THRESH", "0.3"]
        assert run_trainer(trainer, config(trainer), opts, output_dir=str(out))["ssl_mode"] == mode
        (model_dir,) = [p for p in out.iterdir() if (p / "model.pth.tar-1").exists()]  # not tensorboard/
        runs[mode] = (torch.load(model_dir / "model.pth.tar-1", weights_only=True)["state_dict"], out / "log.txt")
    pass_rates = [float(r) for r in re.findall(r"unlabeled: pass_rate ([\d.]+)%", runs["fixmatch"][1].read_text())]
    assert pass_rates and max(pass_rates) > 0
    assert "unlabeled:" not in runs["none"][1].read_text()
    weights = [runs[mode][0] for mode in ("none", "fixmatch")]
    assert weights[0].keys() == weights[1].keys()
    assert any(not torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_cfsg_beats_zero_shot_clip_with_five_labels_a_class(run_trainer):
    """CFSG-CLIP's synth recipe (FixMatch on the unlabeled pool included) against zero-shot
    CLIP on the small render: the class names barely tell siblings apart, the features do
    (docs/WORLD.md), so five labels a class lift the closed accuracy well above zero-shot."""
    zero_shot = run_trainer("LEZeroshotCLIP", config("LEZeroshotCLIP"))
    cfsg = run_trainer("CFSG", "configs/trainers/CFSG/synth.yaml")
    assert cfsg["closed_accuracy"] > zero_shot["closed_accuracy"] + 5


@pytest.fixture(scope="module")
def ccd_runs(synth_root, tmp_path_factory):
    """CCD's synth recipe (128 px, 4 x 4 class maps) on the small render after 0, 1 and 4
    epochs, one warm-up epoch: {epochs: results}."""
    opts = ["TRAINER.CCD.WARMUP_EPOCHS", "1"]
    out = tmp_path_factory.mktemp("ccd")
    return {
        epochs: run_in(out, synth_root, "CCD", "configs/trainers/CCD/synth.yaml",
                       opts + ["OPTIM.MAX_EPOCH", str(epochs)], "synth_ml", "unsup")
        for epochs in (0, 1, 4)
    }


def test_ccds_classifier_learns_from_clips_labels(ccd_runs):
    """Above its untrained self; the labels stay CLIP's own until the warm-up ends."""
    assert ccd_runs[1]["labels_final_mAP"] == ccd_runs[1]["labels_initial_mAP"]  # one epoch: no update yet
    assert ccd_runs[4]["final_mAP"] > ccd_runs[0]["final_mAP"] + 3


@pytest.mark.xfail(strict=True, reason=(
    "world v3: CCD's CAM-guided update moves the small render's pseudo-label mAP by -1.0 to +0.5 "
    "(+1.0 on the full world, seed 1; v2 gave +1.6 / +2.4): docs/WORLD.md"))
def test_ccds_update_raises_its_pseudo_labels(ccd_runs):
    """The CAM-guided update raises the pseudo-labels' mAP against the hidden labels by a
    point (strict: when the world shows it again, this fails until the mark goes)."""
    assert ccd_runs[4]["labels_final_mAP"] > ccd_runs[4]["labels_initial_mAP"] + 1


def test_ccd_beats_zero_shot_clip_from_1600_scenes(run_trainer):
    """CCD's synth recipe for 6 of its 10 epochs on 1,600 training scenes (100 a class) and
    the full world's 320 test scenes: above zero-shot CLIP (32.8 vs 31.2, seed 1; the full
    world's 3,200 scenes: 33.4 vs 31.2, README). The small render's 320 training scenes are
    too few to show it (27-30 against 32.7)."""
    scenes = ["DATASET.SYNTH.POOL_PER_CLASS", "100", "DATASET.SYNTH.TEST_PER_CLASS", "20"]
    zero_shot = run_trainer("LEZeroshotCLIP", config("LEZeroshotCLIP"), scenes, "synth_ml", "unsup")
    ccd = run_trainer("CCD", config("CCD"), scenes + ["OPTIM.MAX_EPOCH", "6"], "synth_ml", "unsup")
    assert ccd["mAP"] > zero_shot["mAP"] + 1


def test_csa_learns_on_the_embedded_world(run_trainer):
    """CSA end to end at labeled ratio 0.1: the trained model beats the untrained one."""
    untrained = run_trainer("CSA", "configs/trainers/CSA/synth.yaml", ["OPTIM.MAX_EPOCH", "0"], "synth_ml", "0.1")
    trained = run_trainer("CSA", "configs/trainers/CSA/synth.yaml", ["OPTIM.MAX_EPOCH", "4"], "synth_ml", "0.1")
    assert trained["mAP"] > untrained["mAP"] + 3
