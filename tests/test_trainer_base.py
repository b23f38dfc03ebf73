"""CLIPTrainer's shared recipe, on stand-in models whose outputs are known by hand:
the class side encoded once per step and per evaluation, the FixMatch step wired to the
strong view and the labeled threshold, the open-set threshold taken from the labeled
training images (never the test set), the evaluator chosen by the dataset's task, and
the config checks."""
import contextlib
import re
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from leclip import ssl
from leclip.dassl import get_cfg_default
from leclip.evaluators import MultiLabelClassification, OpenSetClassification, name_in_cfg
from leclip.trainer_base import CLIPTrainer

SCALE = 10.0


class CountingModel:
    """logits = SCALE * images @ W^T; counts the class-side encodes."""

    def __init__(self):
        self.encodes = 0
        self.weight = torch.eye(3)

    def encode_classes(self):
        self.encodes += 1
        return self.weight

    def __call__(self, images, classes):
        return {"logits": SCALE * images @ classes.t()}


def fake_trainer(**cfg_overrides):
    cfg = get_cfg_default()
    for dotted, value in cfg_overrides.items():
        node = cfg
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    trainer = SimpleNamespace(cfg=cfg, model=CountingModel(), device=torch.device("cpu"), logit_scale=SCALE, num_classes=3)
    for name in (
        "encode_classes", "forward_train", "forward_labeled", "forward_unlabeled", "forward_eval", "supervised_losses",
        "supervised_loss", "output_groups", "unlabeled_weights", "to_device", "predict", "reference_scores",
        "compute_loss", "fixmatch_heads", "score_pass", "split_loader", "eval_outputs", "evaluated",
    ):
        setattr(trainer, name, getattr(CLIPTrainer, name).__get__(trainer))
    trainer.autocast = contextlib.nullcontext
    trainer._models = {}
    trainer.set_model_mode = lambda mode: None
    return trainer


def test_a_fixmatch_step_encodes_the_classes_once_and_weights_the_unlabeled_loss():
    trainer = fake_trainer(**{"TRAINER.SSL.LAMBDA": 0.5})
    trainer.cfg.TRAINER.SSL.CONF_THRESH, trainer.cfg.TRAINER.SSL.SCORE = 0.7, "msp"
    trainer.unlabeled = ssl.FixMatch(trainer)
    images_x, labels = torch.eye(3), torch.tensor([0, 1, 2])
    weak = torch.tensor([[1.0, 0, 0], [0.05, 0, 0], [0, 0, 1]])  # image 1 is unconfident
    strong = torch.tensor([[0, 1.0, 0], [1.0, 0, 0], [0, 0.5, 0.5]])
    batch_x = {"img": images_x, "label": labels}
    batch_u = {"img_weak": weak, "img_strong": strong, "label": torch.tensor([0, 1, 4])}
    losses = trainer.compute_loss(batch_x, batch_u)
    assert trainer.model.encodes == 1  # one text encode for the labeled, weak and strong views
    assert torch.allclose(losses["loss_x"], F.cross_entropy(SCALE * images_x, labels))
    # pseudo-labels 0 and 2 from the weak view; CE on the strong view; mean over the 3 images
    per_image = F.cross_entropy(SCALE * strong, torch.tensor([0, 0, 2]), reduction="none")
    expected = 0.5 * (per_image[0] + per_image[2]) / 3
    assert torch.allclose(losses["loss_u"], expected, atol=1e-6)


class Loader(list):
    def __init__(self, batches):
        super().__init__(batches)
        self.dataset = [None] * sum(len(b["img"]) for b in batches)


def test_the_open_set_threshold_comes_from_the_labeled_training_images():
    """predict's ID score is the image's first value: labeled images score 0.6..0.9,
    test images 0.1..0.4, so a threshold from the wrong set is told apart."""
    trainer = fake_trainer()
    labeled = torch.tensor([[0.6, 0, 0], [0.7, 0, 0], [0.8, 0, 0], [0.9, 0, 0]])
    test = torch.tensor([[0.1, 0, 0], [0.2, 0, 0], [0.3, 0, 0], [0.4, 0, 0]])
    trainer.predict = lambda images, classes: (torch.full((len(images), 2), 0.5), images[:, 0])
    trainer.dm = SimpleNamespace(
        dataset=SimpleNamespace(train_x=["labeled"]),
        make_loader=lambda data, views: Loader([{"img": labeled}]) if data == ["labeled"] else None,
    )
    trainer.test_loader = Loader([{"img": test, "label": torch.tensor([0, 1, 2, 3])}])
    trainer.val_loader = None
    trainer.task = "ossl"
    trainer.evaluator = OpenSetClassification(trainer.cfg, lab2cname={0: "a", 1: "b"})
    trainer.write_scalar = lambda *args: None
    CLIPTrainer.test(trainer)
    assert trainer.evaluator.threshold == pytest.approx(torch.quantile(labeled[:, 0], 0.05).item())
    assert trainer.model.encodes == 1  # once per evaluation, shared by reference and test images


def test_the_evaluator_follows_the_dataset_task():
    for task, chosen in (("ossl", "OpenSetClassification"), ("multilabel", "MultiLabelClassification")):
        cfg = get_cfg_default()
        name_in_cfg(task, cfg)
        assert cfg.TEST.EVALUATOR == chosen
    cfg = get_cfg_default()
    cfg.TEST.EVALUATOR = "MyForkEvaluator"  # a Dassl fork's closed-set dataset keeps its engine's evaluator
    name_in_cfg("closed", cfg)
    assert cfg.TEST.EVALUATOR == "MyForkEvaluator"
    cfg = get_cfg_default()
    cfg.TEST.EVALUATOR = "MultiLabelClassification"
    with pytest.raises(ValueError, match="evaluate a ossl dataset with OpenSetClassification"):
        name_in_cfg("ossl", cfg)
    cfg = get_cfg_default()
    cfg.TEST.PER_CLASS_RESULT = True
    with pytest.raises(ValueError, match="TEST.PER_CLASS_RESULT is an option of Dassl's Classification"):
        name_in_cfg("multilabel", cfg)


def test_score_pass_runs_in_eval_mode_without_grad_and_restores_the_modes():
    trainer = fake_trainer()
    trainer.set_model_mode = CLIPTrainer.set_model_mode.__get__(trainer)
    trainer.get_model_names = lambda names=None: list(trainer._models)
    learnable = torch.nn.Linear(2, 1)
    trainer._models = {"model": learnable}
    seen = []

    def fn(batch):
        seen.append((learnable.training, torch.is_grad_enabled(), batch["img"].device))
        return batch["img"].sum(dim=1).half(), batch["label"]  # a half output comes back as float32

    loader = [{"img": torch.ones(2, 2), "label": torch.tensor([0, 1])},
              {"img": torch.full((1, 2), 2.0), "label": torch.tensor([2])}]
    sums, labels = trainer.score_pass(loader, fn, "a pass")
    assert seen == [(False, False, torch.device("cpu"))] * 2
    assert learnable.training  # back in train mode
    assert sums.dtype == torch.float32 and sums.tolist() == [2.0, 2.0, 4.0] and labels.tolist() == [0, 1, 2]
    assert torch.equal(trainer.score_pass(loader[:1], lambda b: b["label"], "single"), torch.tensor([0, 1]))


def test_the_eta_counts_every_later_epoch_with_its_own_length():
    """An epoch that reads fewer loaders (CSA's first) must not set the ETA of the run."""
    trainer = SimpleNamespace(epoch=0, max_epoch=3, num_batches=4, batch_idx=0)
    trainer.epoch_length = lambda epoch: 4 if epoch == 0 else 18
    assert CLIPTrainer.remaining_batches(trainer) == 3 + 18 + 18
    trainer.epoch, trainer.batch_idx, trainer.num_batches = 2, 17, 18
    assert CLIPTrainer.remaining_batches(trainer) == 0


def test_an_epoch_reads_the_unlabeled_loader_only_when_the_strategy_does():
    loader_x, loader_u = Loader([{"img": torch.zeros(2, 3)}] * 2), Loader([{"img": torch.zeros(2, 3)}] * 5)
    trainer = fake_trainer(**{"TRAIN.COUNT_ITER": "train_u"})
    trainer.train_loader_x, trainer.train_loader_u = loader_x, loader_u
    trainer.unlabeled = SimpleNamespace(reads_unlabeled=lambda epoch: epoch >= 1)
    trainer.epoch_loaders = CLIPTrainer.epoch_loaders.__get__(trainer)
    assert trainer.epoch_loaders(0) == (loader_x, None) and trainer.epoch_loaders(1) == (loader_x, loader_u)
    assert [CLIPTrainer.epoch_length(trainer, epoch) for epoch in (0, 1)] == [2, 5]
    trainer.cfg.TRAIN.COUNT_ITER = "smaller_one"
    assert CLIPTrainer.epoch_length(trainer, 1) == 2


def test_zero_shot_logs_no_training_and_every_run_names_one_evaluator(run_trainer, tmp_path):
    opts = ["DATASET.SYNTH.POOL_PER_CLASS", "8", "DATASET.SYNTH.TEST_PER_CLASS", "4"]
    run_trainer("LEZeroshotCLIP", "configs/trainers/LEZeroshotCLIP/synth.yaml", opts, output_dir=str(tmp_path / "zs"))
    log = (tmp_path / "zs" / "log.txt").read_text()
    assert "train from scratch" not in log and "Finish training" not in log and "Deploy" not in log
    assert "LEZeroshotCLIP learns nothing: evaluating" in log and "* closed_accuracy:" in log
    assert re.findall(r"(?:Loading evaluator|Evaluator of).*", log) == ["Loading evaluator: OpenSetClassification"]
    assert "Evaluating on test: 1 batch in " in log  # the pass's one line (no bar in a log)
