"""CSA's trainer around its tested parts: the config checks and their messages, what the
pseudo-label strategy computes at an epoch's start and end and carries in checkpoints, the
context diagnostics of `test`, and the model's build. (How one step composes the losses is
in tests/test_wiring_methods.py.) The trainers are built without data on a small random
CLIP, so each check runs in well under a second."""
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from leclip import metrics, ssl
from leclip.dassl import get_cfg_default
from leclip.multilabel import contexts, thresholds
from leclip.trainer_base import CLIPTrainer
from leclip.trainers.csa import CSA, CSAModel, PseudoLabels
from test_wiring_methods import CLASS_CONTEXT as WIRING_CLASS_CONTEXT
from test_wiring_methods import CLASSES, clip_model, images  # noqa: F401 (clip_model: the shared fixture)

CLASS_CONTEXT = np.array(WIRING_CLASS_CONTEXT)


def csa_cfg(**overrides):
    cfg = get_cfg_default()
    csa = cfg.TRAINER.CSA
    csa.N_CTX, csa.N_CONTEXTS = 4, 2
    for key, value in overrides.items():
        csa[key] = value
    return cfg


def bare_trainer(**overrides):
    trainer = object.__new__(CSA)
    trainer.cfg, trainer.device = csa_cfg(**overrides), torch.device("cpu")
    trainer.class_context = CLASS_CONTEXT.copy()
    trainer.dm = SimpleNamespace(dataset=SimpleNamespace(classnames=CLASSES))
    trainer.scalars = []
    trainer.write_scalar = lambda tag, value, step: trainer.scalars.append((tag, value, step))
    return trainer


def csa_trainer(clip_model, **overrides):
    trainer = bare_trainer(**overrides)
    csa = trainer.cfg.TRAINER.CSA
    torch.manual_seed(0)
    trainer.model = CSAModel(clip_model, CLASSES, csa, 20.0, csa.N_CONTEXTS if csa.CONTEXT else 0)
    with torch.no_grad():  # the context head starts at 0: logits that differ per image
        for p in trainer.model.learnable["context_head"].parameters() if csa.CONTEXT else ():
            p.normal_(0, 0.5)
    return trainer


# ---------------------------------------------------------------- config checks
@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"THRESHOLDS": "median"}, r"TRAINER.CSA.THRESHOLDS='median': use one of \('classwise', 'global'\)"),
        ({"CONTEXT_INPUT": "patches"}, r"TRAINER.CSA.CONTEXT_INPUT='patches': use one of \('label_features', 'global'\)"),
        ({"PL_SCHEDULE": "batch"}, r"TRAINER.CSA.PL_SCHEDULE='batch': use one of \('epoch', 'step'\)"),
        ({"LABEL_SPECIFIC": False}, "reads the label-specific features: set TRAINER.CSA.LABEL_SPECIFIC True or "
                                    "CONTEXT_INPUT global"),
        ({"CONTEXT": False, "CONTEXT_NARROWING": True}, "CONTEXT_NARROWING reweights class scores by the context head: "
                                                        "set TRAINER.CSA.CONTEXT True"),
        ({"TAU": 0.0}, "TAU=0.0, N_CONTEXTS=2, PL_START_EPOCH=1: TAU must be positive"),
        ({"N_CONTEXTS": 0}, "N_CONTEXTS=0"),
        ({"PL_START_EPOCH": -1}, "PL_START_EPOCH=-1"),
    ],
)
def test_check_cfg_names_the_key_and_the_fix(overrides, message):
    trainer = bare_trainer(**overrides)
    with pytest.raises(ValueError, match=message):
        trainer.check_cfg(trainer.cfg)


def test_check_cfg_refuses_fixmatch():
    trainer = bare_trainer()
    trainer.cfg.TRAINER.SSL.MODE = "fixmatch"
    with pytest.raises(ValueError, match="set TRAINER.SSL.MODE none"):
        trainer.check_cfg(trainer.cfg)


@pytest.mark.parametrize(
    "overrides",
    [{}, {"TAU": 1e-6, "N_CONTEXTS": 1, "PL_START_EPOCH": 0}, {"LABEL_SPECIFIC": False, "CONTEXT_INPUT": "global"},
     {"LABEL_SPECIFIC": False, "CONTEXT": False}, {"CONTEXT_NARROWING": True, "PL_SCHEDULE": "step"},
     {"THRESHOLDS": "global"}],
)
def test_check_cfg_accepts_the_edges(overrides):
    trainer = bare_trainer(**overrides)
    trainer.check_cfg(trainer.cfg)


def test_labeled_only_without_pseudo_labels_and_no_labeled_image_is_refused(monkeypatch):
    assert bare_trainer().use_unlabeled and not bare_trainer(PSEUDO_LABELS=False).use_unlabeled
    trainer = bare_trainer()
    assert type(trainer.build_unlabeled()) is PseudoLabels
    assert type(bare_trainer(PSEUDO_LABELS=False).build_unlabeled()) is ssl.Unlabeled

    def no_labeled(self):
        self.dm = SimpleNamespace(dataset=SimpleNamespace(train_x=[]))

    monkeypatch.setattr(CLIPTrainer, "build_data_loader", no_labeled)
    with pytest.raises(ValueError, match="has no labeled image in this setting: set DATASET.LABELED_RATIO"):
        trainer.build_data_loader()


# ---------------------------------------------------------------- the model's build
def built(monkeypatch, clip_model, labels, **overrides):
    trainer = bare_trainer(**overrides)
    trainer.seed = 3
    trainer._models, trainer._optims, trainer._scheds = {}, {}, {}
    trainer.dm = SimpleNamespace(dataset=SimpleNamespace(train_x=[SimpleNamespace(label=row) for row in labels],
                                                         classnames=CLASSES))
    trainer.load_clip = lambda: clip_model
    trainer.logit_scale = 20.0
    trainer.build_model()
    return trainer


def test_build_model_clusters_the_labeled_labels_and_reports_unseen_classes(monkeypatch, clip_model, capsys):
    labels = [[1, 0, 1, 0], [1, 0, 1, 0], [0, 1, 0, 0], [0, 1, 0, 0]]  # "amber star" never positive
    trainer = built(monkeypatch, clip_model, labels)
    assert torch.equal(trainer.labeled_labels, torch.tensor(labels, dtype=torch.float32))
    assert trainer.class_context[3] == contexts.NO_CONTEXT
    assert trainer.class_context[0] == trainer.class_context[2] != trainer.class_context[1]
    out = capsys.readouterr().out
    assert "CSA: 1 classes have no positive among the 4 labeled images (amber star)" in out
    assert f"CSA context {trainer.class_context[0]}: crimson disc, olive ring" in out
    assert set(trainer._models) == {"csa"} and trainer._models["csa"] is trainer.model.learnable
    assert trainer.model.learnable["context_head"].weight.shape[0] == 2
    assert isinstance(trainer.model.learnable["context_head"], contexts.LabelContextHead)
    # the optimizer holds exactly the learnable parameters
    held = {id(p) for group in trainer.optim.param_groups for p in group["params"]}
    assert held == {id(p) for p in trainer.model.learnable.parameters()}


def test_build_model_without_context_task_has_no_head_and_no_clustering(monkeypatch, clip_model, capsys):
    trainer = built(monkeypatch, clip_model, [[1, 1, 1, 1], [0, 1, 0, 1]], CONTEXT=False)
    assert "context_head" not in trainer.model.learnable
    assert "CSA context" not in capsys.readouterr().out
    trainer = built(monkeypatch, clip_model, [[1, 1, 1, 1], [0, 1, 0, 1]], CONTEXT_INPUT="global")
    assert isinstance(trainer.model.learnable["context_head"], contexts.ContextHead)
    assert "have no positive" not in capsys.readouterr().out


# ---------------------------------------------------------------- checkpoints
def test_contexts_travel_with_the_checkpoint(monkeypatch):
    monkeypatch.setattr(CLIPTrainer, "trainer_state", lambda self: {"engine": 1})
    monkeypatch.setattr(CLIPTrainer, "load_trainer_state", lambda self, state: None)
    state = bare_trainer().trainer_state()
    assert state["engine"] == 1 and torch.equal(state["class_context"], torch.as_tensor(CLASS_CONTEXT))
    restored = bare_trainer()
    restored.class_context = None
    restored.load_trainer_state(state)
    assert np.array_equal(restored.class_context, CLASS_CONTEXT)
    assert bare_trainer(CONTEXT=False).trainer_state()["class_context"] is None
    untouched = bare_trainer(CONTEXT=False)
    untouched.class_context = "kept"
    untouched.load_trainer_state({"class_context": None})
    assert untouched.class_context == "kept"


def test_pseudo_label_state_round_trip():
    strategy = PseudoLabels(bare_trainer())
    assert strategy.state() == {"thresholds": None, "pseudo": None}
    strategy.thresholds, strategy.pseudo = torch.tensor([0.5, 0.2]), torch.tensor([[1.0, 0.0]])
    state = strategy.state()
    other = PseudoLabels(bare_trainer())
    other.load_state(state)
    assert torch.equal(other.thresholds, strategy.thresholds) and torch.equal(other.pseudo, strategy.pseudo)
    other.load_state({"thresholds": None, "pseudo": None})
    assert other.thresholds is None and other.pseudo is None


# ---------------------------------------------------------------- the pseudo-label passes
def pseudo_trainer(scores, labeled, hidden, epoch=1, **overrides):
    trainer = bare_trainer(**overrides)
    trainer.epoch, trainer.max_epoch = epoch, 10
    trainer.labeled_labels = torch.tensor(labeled, dtype=torch.float32)
    trainer.score_unlabeled = lambda: torch.tensor(scores)
    trainer.dm = SimpleNamespace(dataset=SimpleNamespace(train_u=[SimpleNamespace(label=row) for row in hidden]))
    return trainer, PseudoLabels(trainer)


SCORES = [[0.9, 0.1], [0.8, 0.7], [0.2, 0.6], [0.4, 0.3]]
LABELED = [[1, 0], [1, 1], [0, 0], [0, 0]]  # class rates 1/2 and 1/4: 2 and 1 pseudo-positives
HIDDEN = [[1, 0], [0, 1], [0, 1], [1, 0]]


@pytest.mark.parametrize("rule", ["classwise", "global"])
def test_epoch_pass_sets_the_rules_thresholds_and_labels(rule, capsys):
    trainer, strategy = pseudo_trainer(SCORES, LABELED, HIDDEN, THRESHOLDS=rule)
    strategy.quality.update(torch.ones(1, 2), torch.ones(1, 2))  # last epoch's counts are dropped
    strategy.before_epoch()
    scores, labeled = torch.tensor(SCORES), torch.tensor(LABELED, dtype=torch.float32)
    rule_fn = thresholds.classwise_thresholds if rule == "classwise" else thresholds.global_threshold
    expected = rule_fn(scores, labeled)
    assert torch.equal(strategy.thresholds, expected)
    assert torch.equal(strategy.pseudo, (scores >= expected).float())
    assert strategy.quality.predicted == 0
    out = capsys.readouterr().out
    quality = thresholds.pseudo_label_quality(strategy.pseudo, torch.tensor(HIDDEN, dtype=torch.float32))
    assert (f"epoch [2/10] pseudo-labels ({rule} thresholds): {int(strategy.pseudo.sum())} positives in 4 images, "
            f"precision {100 * quality['precision']:.1f}% recall {100 * quality['recall']:.1f}%") in out
    if rule == "classwise":
        assert strategy.pseudo.tolist() == [[1, 0], [1, 1], [0, 0], [0, 0]]
        assert "precision 66.7% recall 50.0% | thresholds 0.800 0.700" in out


def test_no_pass_before_the_start_epoch(capsys):
    trainer, strategy = pseudo_trainer(SCORES, LABELED, HIDDEN, epoch=0)
    assert not strategy.reads_unlabeled(0) and strategy.reads_unlabeled(1)
    strategy.before_epoch()
    strategy.after_epoch()
    assert strategy.thresholds is None and strategy.pseudo is None
    assert capsys.readouterr().out == "" and trainer.scalars == []


def test_epoch_end_logs_the_quality_of_the_labels_the_loss_used(capsys):
    trainer, strategy = pseudo_trainer(SCORES, LABELED, HIDDEN, epoch=2)
    strategy.before_epoch()
    # 3 labels used, 2 hidden positives, 1 in common
    strategy.quality.update(torch.tensor([[1.0, 1.0], [0.0, 1.0]]), torch.tensor([[1.0, 0.0], [1.0, 0.0]]))
    strategy.after_epoch()
    assert "epoch [3/10] pseudo-labels used (epoch schedule): precision 33.3% recall 50.0%" in capsys.readouterr().out
    assert [(tag, round(value, 2), step) for tag, value, step in trainer.scalars] == [
        ("train/pseudo_label_precision", 33.33, 2), ("train/pseudo_label_recall", 50.0, 2)]


def test_unlabeled_losses_use_the_epochs_labels_and_count_them(clip_model):
    trainer = csa_trainer(clip_model)
    strategy = trainer.unlabeled = PseudoLabels(trainer)
    strategy.pseudo = torch.tensor([[1.0, 0, 0, 1], [0, 1, 1, 0], [1, 1, 0, 0]])
    strategy.thresholds = torch.full((4,), 0.5)
    batch_u = {"img": images(2, 5), "index": torch.tensor([2, 0]), "label": torch.tensor([[1.0, 0, 0, 0], [0, 0, 0, 1]])}
    losses = strategy.losses(None, batch_u, trainer.model.encode_classes())
    assert set(losses) == {"loss_u", "loss_ctx_u"}
    assert (strategy.quality.true_pos, strategy.quality.predicted, strategy.quality.actual) == (2, 4, 2)
    trainer.cfg.TRAINER.CSA.CONTEXT = False
    assert set(strategy.losses(None, batch_u, trainer.model.encode_classes())) == {"loss_u"}


# ---------------------------------------------------------------- scores and context diagnostics
def test_class_scores_narrow_only_when_asked():
    logits = torch.tensor([[0.0, 2.0, -1.0, 1.0]])
    context_logits = torch.tensor([[math.log(3.0), 0.0]])  # posteriors 0.75 and 0.5
    out = {"logits": logits, "context_logits": context_logits}
    assert torch.allclose(bare_trainer().class_scores(out), logits.sigmoid())
    narrowed = bare_trainer(CONTEXT_NARROWING=True).class_scores(out)
    assert torch.allclose(narrowed, logits.sigmoid() * torch.tensor([0.75, 0.5, 0.75, 1.0]))


def test_context_targets_and_weighted_loss():
    trainer = bare_trainer(CONTEXT_WEIGHT=0.25)
    labels = torch.tensor([[1.0, 0, 0, 1], [0, 1, 1, 0], [0, 0, 0, 1]])
    assert trainer.context_targets(labels).tolist() == [[1, 0], [1, 1], [0, 0]]
    logits = torch.tensor([[1.0, -1.0], [0.5, 0.5], [-2.0, 0.0]])
    expected = 0.25 * contexts.context_loss(logits, trainer.context_targets(labels))
    assert torch.allclose(trainer.context_loss({"context_logits": logits}, labels), expected)
    assert set(trainer.supervised_losses({"logits": torch.zeros(3, 4), "context_logits": logits}, labels)) == {
        "loss_x", "loss_ctx_x"}
    assert set(bare_trainer(CONTEXT=False).supervised_losses({"logits": torch.zeros(3, 4)}, labels)) == {"loss_x"}


def diagnosed(capsys, context=True):
    """`evaluated` after a test pass whose context head gave fixed logits."""
    trainer = bare_trainer(CONTEXT=context)
    trainer.epoch = 4
    trainer.labeled_labels = torch.tensor([[1.0, 0, 0, 0], [1.0, 0, 0, 0], [0, 1, 0, 0], [1, 0, 0, 0]])
    trainer.evaluator = SimpleNamespace(last_results={})
    logits = torch.tensor([[2.0, -1.0], [-1.0, 1.0], [1.0, 1.0], [-3.0, -2.0]])
    labels = torch.tensor([[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    trainer.evaluated("test", labels, *([logits] if context else []))
    return trainer, logits, labels, capsys.readouterr().out


def test_one_forward_gives_the_class_scores_and_the_context_logits():
    calls = []
    with_head = {"logits": torch.tensor([[0.0, 2.0, -2.0, 0.5]]), "context_logits": torch.tensor([[1.0, -1.0]])}
    for context in (True, False):
        out = with_head if context else {"logits": with_head["logits"]}
        trainer = bare_trainer(CONTEXT=context)
        trainer.forward_eval = lambda images, classes: calls.append((images, classes)) or out
        scores, positives, *extra = trainer.eval_outputs("images", "classes")
        assert torch.equal(scores, out["logits"].sigmoid()) and positives.tolist() == [[True, True, False, True]]
        assert [e is with_head["context_logits"] for e in extra] == ([True] if context else [])
        assert [x.tolist() for x in trainer.predict("images", "classes")] == [scores.tolist(), positives.tolist()]
    assert calls == [("images", "classes")] * 4


def test_test_adds_the_context_accuracy_against_the_prior(monkeypatch, capsys):
    trainer, logits, labels, out = diagnosed(capsys)
    targets = contexts.context_targets(labels, CLASS_CONTEXT, 2)  # [[1,0],[0,1],[1,0],[0,0]]
    element, exact = contexts.context_accuracy(logits, targets)
    assert (element, exact) == (87.5, 75.0)  # image 2 says context 1 too
    bce = contexts.context_loss(logits, targets).item()
    # labeled context rates 3/4 and 1/4: the prior says context 0 yes, context 1 no
    prior = torch.logit(torch.tensor([0.75, 0.25])).expand(4, 2)
    prior_element, _ = contexts.context_accuracy(prior, targets)
    assert prior_element == 62.5
    # AP of context 0: images 0 and 2 ranked 1st and 2nd -> 1; of context 1: image 1 ranked 1st of
    # 1, 1, -1, -2 (tied with image 2) -> precision 1/2 at its recall -> 0.5 (sklearn's ties)
    assert metrics.mean_average_precision(logits, targets) == pytest.approx(75.0)
    # the prior ties every image: AP = each context's rate, 2/4 and 1/4
    assert (f"* context_accuracy: 87.50%  (exact 75.00%, mAP 75.00, BCE {bce:.3f}; labeled-rate prior: 62.50%, "
            f"mAP 37.50, BCE {contexts.context_loss(prior, targets).item():.3f}; logit 0: BCE {2 * math.log(2):.3f})") in out
    assert trainer.evaluator.last_results == {"context_accuracy": 87.5, "context_exact": 75.0, "context_map": 75.0}
    assert trainer.scalars == [("test/context_accuracy", 87.5, 4), ("test/context_exact", 75.0, 4),
                               ("test/context_map", 75.0, 4)]


def test_test_without_context_task_adds_nothing(monkeypatch, capsys):
    trainer, _, _, out = diagnosed(capsys, context=False)
    assert out == "" and trainer.evaluator.last_results == {} and trainer.scalars == []


def test_context_groups_name_each_contexts_classes():
    assert bare_trainer().context_groups() == [("context 0", ["crimson disc", "olive ring"]),
                                               ("context 1", ["navy square"])]
