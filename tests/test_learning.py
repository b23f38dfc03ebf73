"""Every task-A baseline on the embedded world: a short run beats the untrained model,
and the shared FixMatch recipe runs it on the unlabeled pool. (CFSG-CLIP and zero-shot
CLIP have their own end-to-end tests.)"""
import pytest

TRAINERS = ["LECoOp", "LELoCoOp", "LEPLOT", "LECLIPAdapter", "LEMaPLe", "LECLIPLoRA"]


def config(trainer):
    return f"configs/trainers/{trainer}/synth.yaml"


@pytest.mark.parametrize("trainer", TRAINERS)
def test_learns_on_the_embedded_world(run_trainer, trainer):
    untrained = run_trainer(trainer, config(trainer), ["OPTIM.MAX_EPOCH", "0"])
    trained = run_trainer(trainer, config(trainer), ["OPTIM.MAX_EPOCH", "8"])
    assert trained["closed_accuracy"] > untrained["closed_accuracy"] + 2


@pytest.mark.parametrize("trainer", TRAINERS)
def test_runs_with_fixmatch(run_trainer, tmp_path, trainer):
    out = tmp_path / "fixmatch"
    opts = ["OPTIM.MAX_EPOCH", "1", "TRAINER.SSL.MODE", "fixmatch"]
    assert run_trainer(trainer, config(trainer), opts, output_dir=str(out))["ssl_mode"] == "fixmatch"
    assert "unlabeled: pass_rate" in (out / "log.txt").read_text()  # the unlabeled batches ran
