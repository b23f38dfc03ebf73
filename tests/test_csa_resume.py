"""CSA killed and resumed on both engines (tests/kill_resume.py): its contexts and its
pseudo-label strategy's thresholds and labels live in the epoch checkpoints, so a run
killed after an epoch's pseudo-label pass, or mid-epoch after a checkpoint-less epoch,
ends bit-identical to an uninterrupted one."""
import pytest
import torch
from kill_resume import check_kill_resume

TINY = ["DATASET.SYNTH.POOL_PER_CLASS", "8", "DATASET.SYNTH.TEST_PER_CLASS", "4", "DATALOADER.TEST.BATCH_SIZE", "128"]
CSA = "configs/trainers/CSA/synth.yaml"


@pytest.mark.parametrize("engine, schedule", [("builtin", "epoch"), ("dassl", "epoch"), ("builtin", "step")])
def test_csa_resumes_exactly(tmp_path, synth_root, engine, schedule):
    """Epoch 1 is labeled-only, 2 and 3 read the unlabeled set; epoch 2 is saved, 3 is the
    last. Kills: after epoch 2's pass (no checkpoint yet: from scratch) and mid-epoch 3
    (from epoch 2's checkpoint)."""
    opts = TINY + ["OPTIM.MAX_EPOCH", "3", "TRAIN.CHECKPOINT_FREQ", "2", "TRAINER.CSA.PL_SCHEDULE", schedule]
    models, _ = check_kill_resume(tmp_path, synth_root, engine, "CSA", CSA, opts, "synth_ml", "0.1",
                                  kills=[(2, "start"), (3, 2)])
    state = models["csa"][2]
    # N_CONTEXTS 4 in the recipe; -1: a class without a labeled positive in the tiny world
    assert {0, 1, 2, 3} <= set(state["class_context"].tolist()) <= {-1, 0, 1, 2, 3}
    pseudo, thresholds = state["unlabeled"]["pseudo"], state["unlabeled"]["thresholds"]
    assert pseudo.dim() == 2 and pseudo.shape[1] == thresholds.numel() == 16 and torch.isfinite(thresholds).any()
