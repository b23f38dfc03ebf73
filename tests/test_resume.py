"""Kill and resume, on both engines: a run killed mid-epoch, between epochs, or between
two epochs without a checkpoint (TRAIN.CHECKPOINT_FREQ 2), then resumed by the same
command, ends with the weights, trainer state and results of an uninterrupted run
(tests/kill_resume.py). On Dassl's engine (the miniature one of tests/mini_dassl.py,
whose checkpoints hold no trainer state) the state travels through LE-CLIP's wrapping
of save_model / resume_model_if_exist."""
import pytest
from kill_resume import check_kill_resume

from leclip.engine.checkpoint import epoch_files

ENGINES = ["builtin", "dassl"]
TINY = ["DATASET.SYNTH.POOL_PER_CLASS", "8", "DATASET.SYNTH.TEST_PER_CLASS", "4", "DATALOADER.TEST.BATCH_SIZE", "128"]
CFSG = "configs/trainers/CFSG/synth.yaml"
COOP = "configs/trainers/LECoOp/synth.yaml"


@pytest.mark.parametrize("engine", ENGINES)
def test_cfsg_with_fixmatch_resumes_exactly(tmp_path, synth_root, engine):
    """FixMatch's running thresholds live in the checkpoint. With TRAIN.CHECKPOINT_FREQ 2
    epoch 1 ends unsaved: a kill there restarts from scratch, with nothing of epoch 1
    left over; a kill in the middle of epoch 3 resumes from epoch 2's checkpoint."""
    opts = TINY + ["OPTIM.MAX_EPOCH", "3", "TRAIN.CHECKPOINT_FREQ", "2"]
    models, _ = check_kill_resume(tmp_path, synth_root, engine, "CFSG", CFSG, opts, "synth_fg", "5",
                                  kills=[(1, "end"), (3, 2)])
    thresholds = models["cfsg"][2]["unlabeled"]["thresholds"]
    assert set(thresholds) == {"coarse", "fine"} and all(t > float("-inf") for t in thresholds.values())


@pytest.mark.parametrize("engine", ENGINES)
def test_coop_resumes_exactly(tmp_path, synth_root, engine):
    """Killed between epochs 2 and 3, after epoch 2's checkpoint (TRAIN.CHECKPOINT_FREQ 1)."""
    opts = TINY + ["OPTIM.MAX_EPOCH", "3", "TRAIN.CHECKPOINT_FREQ", "1"]
    check_kill_resume(tmp_path, synth_root, engine, "LECoOp", COOP, opts, "synth_fg", "5", kills=[(3, "start")])


@pytest.mark.parametrize("keep_every", [False, True])
def test_checkpoints_kept_are_the_last_unless_every_one_is_asked_for(run_trainer, tmp_path, keep_every):
    opts = TINY + ["OPTIM.MAX_EPOCH", "3", "TRAIN.CHECKPOINT_FREQ", "1", "TRAIN.KEEP_EVERY_CHECKPOINT", str(keep_every)]
    run_trainer("LECoOp", COOP, opts, output_dir=str(tmp_path / "run"))
    assert sorted(epoch_files(str(tmp_path / "run" / "prompt_learner"))) == ([1, 2, 3] if keep_every else [3])
