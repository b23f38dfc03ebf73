"""The evaluators' wiring and printed report against hand-computed values (the metric
functions themselves are checked in test_metrics.py)."""
import pytest
import torch

import leclip.config  # noqa: F401 -- declares TEST.OOD_QUANTILE, as importing a trainer does
from leclip.dassl import build_evaluator, get_cfg_default
from leclip.evaluators import MultiLabelClassification, OpenSetClassification, name_in_cfg


def open_set(cfg=None, lab2cname=None, reference=(0.25, 0.75)):
    """An OpenSetClassification whose threshold is 0.5 (TEST.OOD_QUANTILE 0.5 of `reference`)."""
    cfg = cfg or get_cfg_default()
    cfg.TEST.OOD_QUANTILE = 0.5
    evaluator = OpenSetClassification(cfg, lab2cname=lab2cname)
    evaluator.set_reference_scores(torch.tensor(reference))
    return evaluator


def report_lines(capsys):
    return capsys.readouterr().out.splitlines()


def test_the_engine_builds_the_named_evaluator_with_the_config_and_the_class_count():
    cfg = get_cfg_default()
    name_in_cfg("ossl", cfg)
    evaluator = build_evaluator(cfg, lab2cname={0: "a", 1: "b", 2: "c"})
    assert isinstance(evaluator, OpenSetClassification) and evaluator.cfg is cfg and evaluator.num_id == 3
    cfg = get_cfg_default()
    cfg.freeze()
    name_in_cfg("multilabel", cfg)
    assert cfg.is_frozen() and isinstance(build_evaluator(cfg, lab2cname={0: "a"}), MultiLabelClassification)


def test_fresh_evaluators_have_empty_results():
    assert OpenSetClassification(get_cfg_default(), lab2cname={0: "a"}).last_results == {}
    assert MultiLabelClassification(get_cfg_default()).last_results == {}


def test_closed_accuracy_is_over_the_named_classes_only():
    # 3 output columns, 2 named classes: the argmax is taken over the first two
    evaluator = open_set(lab2cname={0: "a", 1: "b"})
    evaluator.process(torch.tensor([[0.3, 0.1, 0.6], [0.1, 0.2, 0.7]]), torch.tensor([0, 1]))
    assert evaluator.evaluate()["closed_accuracy"] == pytest.approx(100.0)
    # without names, every column is a class
    evaluator = open_set()
    evaluator.process(torch.tensor([[0.3, 0.1, 0.6], [0.1, 0.2, 0.7]]), torch.tensor([0, 2]))
    assert evaluator.evaluate()["closed_accuracy"] == pytest.approx(50.0)


def test_given_id_scores_replace_the_max_probability():
    evaluator = open_set(lab2cname={0: "a", 1: "b"})
    probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3]])
    # by max probability all three pass 0.5; by the given scores the OOD image (label 2) is unknown
    evaluator.process(probs, torch.tensor([0, 0, 2]), id_score=torch.tensor([0.9, 0.6, 0.1]))
    results = evaluator.evaluate()
    assert results["balanced_accuracy"] == pytest.approx(100.0)
    assert results["auroc"] == pytest.approx(100.0)


def test_a_score_at_the_threshold_is_id():
    evaluator = open_set(lab2cname={0: "a"})
    evaluator.process(torch.tensor([[0.5], [0.25]]), torch.tensor([0, 1]))  # threshold 0.5
    # the ID image (0.5) is ID, the OOD image (0.25) unknown: recalls 1, 1
    assert evaluator.evaluate()["balanced_accuracy"] == pytest.approx(100.0)


def test_open_set_report(capsys):
    evaluator = open_set(lab2cname={0: "a", 1: "b"})
    probs = torch.tensor([[0.9, 0.1], [0.25, 0.75], [0.6, 0.4], [0.3, 0.7]])
    evaluator.process(probs, torch.tensor([0, 1, 1, 2]))
    evaluator.evaluate()
    lines = report_lines(capsys)
    assert "(ID 3, OOD 1)" in lines[1]
    assert "* accuracy: 66.67%" in lines  # the line Dassl's result parsers read
    assert "* auroc: 66.67%" in lines  # ID {.9, .75, .6} vs OOD {.7}: 2 of 3 pairs right


def test_open_set_report_without_ood_images(capsys):
    evaluator = open_set(lab2cname={0: "a", 1: "b"})
    evaluator.process(torch.tensor([[0.9, 0.1], [0.25, 0.75]]), torch.tensor([0, 1]))
    evaluator.evaluate()
    assert any(line.startswith("* auroc: n/a") for line in report_lines(capsys))


def test_multilabel_results_and_report(capsys):
    evaluator = MultiLabelClassification(get_cfg_default())
    scores = torch.tensor([[0.9, 0.8, 0.1], [0.7, 0.2, 0.3], [0.6, 0.1, 0.2]])
    targets = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 0, 0]])  # class 2 has no positive
    positives = torch.tensor([[True, False, False], [True, False, True], [False, False, False]])
    evaluator.process(scores, targets, positives)
    results = evaluator.evaluate()
    # class 0: P 2/2, R 2/3; class 1: nothing predicted, P 0, R 0 -> CP 1/2, CR 1/3
    assert results["CF1"] == pytest.approx(100 * 2 * (1 / 2) * (1 / 3) / (1 / 2 + 1 / 3))
    # overall: tp 2 of 2 predicted (class 2's false positive left out), 4 positives
    assert results["OF1"] == pytest.approx(100 * 2 * 1 * 0.5 / 1.5)
    assert results["mAP"] == pytest.approx(100.0)
    lines = report_lines(capsys)
    assert any("2 of 3" in line for line in lines)  # classes with a positive
    assert "* CF1: 40.00%" in lines and "* OF1: 66.67%" in lines
