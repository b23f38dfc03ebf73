"""Metrics and evaluators against hand-computed values."""
import math
import warnings

import numpy as np
import pytest
import torch

import leclip.config  # noqa: F401 -- declares TEST.OOD_QUANTILE, as importing a trainer does
from leclip import metrics
from leclip.engine import get_cfg_default
from leclip.evaluators import MultiLabelClassification, OpenSetClassification


@pytest.fixture
def no_warnings():
    """Every warning is an error: the undefined cases answer nan or 0 quietly."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def test_closed_accuracy_ignores_ood_and_takes_argmax_over_id_classes():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.5, 0.5]])
    labels = np.array([0, 0, 1, 2])  # the last image is OOD (label >= K = 2)
    assert metrics.closed_accuracy(probs, labels, 2) == pytest.approx(100 / 3)


def test_open_set_balanced_accuracy_by_hand():
    # K = 2 ID classes + unknown; recalls: class0 1/2, class1 1/1, unknown 2/3
    pred_id = np.array([0, 1, 1, 0, 1, 0])
    unknown = np.array([False, False, False, True, True, False])
    labels = np.array([0, 0, 1, 2, 3, 2])
    expected = 100 * (0.5 + 1 + 2 / 3) / 3
    assert metrics.open_set_balanced_accuracy(pred_id, unknown, labels, 2) == pytest.approx(expected)


def test_threshold_is_the_labeled_quantile():
    scores = np.arange(1, 101) / 100
    assert metrics.ood_threshold(scores, 0.05) == pytest.approx(np.quantile(scores, 0.05))
    with pytest.raises(ValueError, match="no labeled score"):
        metrics.ood_threshold([], 0.05)


def test_auroc_by_hand():
    # pairs (id, ood): 0.9>0.2, 0.9>0.6, 0.5>0.2, 0.5<0.6 -> 3/4
    assert metrics.auroc([0.9, 0.5], [0.2, 0.6]) == pytest.approx(75.0)
    assert math.isnan(metrics.auroc([0.9], []))


def test_map_skips_classes_without_positives():
    scores = np.array([[0.9, 0.1, 0.3], [0.2, 0.8, 0.6], [0.7, 0.3, 0.1]])
    targets = np.array([[1, 0, 0], [0, 1, 0], [0, 1, 0]])
    # class 0: AP 1; class 1: ranks 0.8(+), 0.3(+), 0.1(-) -> AP 1; class 2 has no positive
    assert metrics.mean_average_precision(scores, targets) == pytest.approx(100.0)
    targets[2] = [1, 0, 0]  # class 0 now: 0.9(+), 0.7(+) -> 1; class 1: 0.8(+) -> 1
    scores[2] = [0.1, 0.9, 0.1]  # class 0: 0.9(+), 0.2(-), 0.1(+) -> (1 + 2/3)/2
    assert metrics.mean_average_precision(scores, targets) == pytest.approx(100 * ((1 + 2 / 3) / 2 + 0.5) / 2)


def test_cf1_of1_by_hand():
    positives = np.array([[1, 1, 0], [0, 1, 0], [1, 0, 1]], dtype=bool)
    targets = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 0]])  # class 2 has no positive: left out
    # class 0: tp 1, predicted 2, positives 1 -> P 1/2 R 1; class 1: tp 1, pred 2, pos 1 -> P 1/2 R 1
    cp, cr = 0.5, 1.0
    op, orr = 2 / 4, 2 / 2  # class 2's false positive is not counted either
    cf1, of1 = metrics.cf1_of1(positives, targets)
    assert cf1 == pytest.approx(100 * 2 * cp * cr / (cp + cr))
    assert of1 == pytest.approx(100 * 2 * op * orr / (op + orr))


def test_cf1_counts_a_class_never_predicted_as_zero_precision():
    positives = np.array([[1, 0], [0, 0]], dtype=bool)
    targets = np.array([[1, 0], [0, 1]])
    # class 0: P 1 R 1; class 1: nothing predicted -> P 0, R 0; CP = CR = 1/2
    cf1, of1 = metrics.cf1_of1(positives, targets)
    assert cf1 == pytest.approx(50.0)
    assert of1 == pytest.approx(100 * 2 * 1 * 0.5 / 1.5)  # OP 1/1, OR 1/2


def test_top_k_positives_allows_several_positives_per_image():
    scores = torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.1, 0.2, 0.3, 0.4]])
    assert metrics.top_k_positives(scores, 3).tolist() == [[True, True, True, False], [False, True, True, True]]
    assert metrics.top_k_positives(scores, 9).all()  # k above the class count: every class


def test_mean_average_precision_skips_classes_without_positives():
    scores = np.array([[0.9, 0.2, 0.5], [0.1, 0.8, 0.4], [0.4, 0.3, 0.6]])
    targets = np.array([[1, 0, 0], [0, 1, 0], [0, 1, 0]])
    # class 0: AP 1; class 1: ranks 0.8 (+), 0.3 (+), 0.2 (-) -> AP 1; class 2 has no positive
    assert metrics.mean_average_precision(scores, targets) == pytest.approx(100.0)
    targets[1, 1] = 0  # class 1 positive only at 0.3, behind 0.8 -> AP 1/2
    assert metrics.mean_average_precision(scores, targets) == pytest.approx(75.0)


def test_open_set_threshold_is_the_005_quantile_of_the_labeled_scores_by_default():
    evaluator = OpenSetClassification(get_cfg_default(), lab2cname={0: "a", 1: "b"})
    evaluator.set_reference_scores(torch.arange(100, dtype=torch.float32))
    assert evaluator.threshold == pytest.approx(4.95)  # numpy's linear quantile of 0..99 at 0.05


def make_cfg():
    cfg = get_cfg_default()
    cfg.TEST.OOD_QUANTILE = 0.5
    return cfg


def test_open_set_evaluator_end_to_end():
    evaluator = OpenSetClassification(make_cfg(), lab2cname={0: "a", 1: "b"})
    evaluator.set_reference_scores(torch.tensor([0.5, 0.9]))  # threshold 0.7
    probs = torch.tensor([[0.9, 0.1], [0.25, 0.75], [0.65, 0.35], [0.8, 0.2]])
    labels = torch.tensor([0, 1, 2, 3])
    evaluator.process(probs, labels)
    results = evaluator.evaluate()
    assert list(results) == ["closed_accuracy", "balanced_accuracy", "auroc"]
    assert results["closed_accuracy"] == pytest.approx(100.0)
    # unknown: image 3 (0.65 < 0.7) yes, image 4 (0.8) no -> recalls 1, 1, 1/2
    assert results["balanced_accuracy"] == pytest.approx(100 * 2.5 / 3)
    assert results["auroc"] == pytest.approx(75.0)  # id {0.9, 0.75} vs ood {0.65, 0.8}


def test_open_set_evaluator_requires_reference_scores():
    evaluator = OpenSetClassification(make_cfg(), lab2cname={0: "a"})
    evaluator.process(torch.tensor([[1.0]]), torch.tensor([0]))
    with pytest.raises(RuntimeError, match="set_reference_scores"):
        evaluator.evaluate()


def test_multilabel_evaluator():
    evaluator = MultiLabelClassification(make_cfg())
    scores = torch.tensor([[0.9, 0.2, 0.7], [0.1, 0.8, 0.6]])
    positives = torch.tensor([[True, False, True], [False, True, False]])
    evaluator.process(scores, torch.tensor([[1, 0, 0], [0, 1, 0]]), positives)
    results = evaluator.evaluate()
    assert list(results) == ["mAP", "CF1", "OF1"]
    assert results["mAP"] == pytest.approx(100.0)  # class 2 has no positive: not averaged
    assert results["OF1"] == pytest.approx(100.0)  # nor is its false positive counted


def test_closed_accuracy_without_id_images_is_nan():
    assert math.isnan(metrics.closed_accuracy(np.array([[0.9, 0.1]]), np.array([2]), 2))


def test_open_set_balanced_accuracy_on_an_id_only_test_set(no_warnings):
    # no true "unknown": recalls class 0: 1/1, class 1: 0/1 (predicted unknown)
    value = metrics.open_set_balanced_accuracy(np.array([0, 1]), np.array([False, True]), np.array([0, 1]), 2)
    assert value == pytest.approx(50.0)


def test_auroc_with_one_image_on_a_side_and_none(no_warnings):
    assert metrics.auroc([0.5], [0.2, 0.9]) == pytest.approx(50.0)
    assert metrics.auroc([0.9, 0.5], [0.2]) == pytest.approx(100.0)
    assert math.isnan(metrics.auroc([0.9, 0.5], []))
    assert math.isnan(metrics.auroc([], [0.2]))


def test_map_without_any_positive_is_nan(no_warnings):
    assert math.isnan(metrics.mean_average_precision(np.array([[0.9, 0.1]]), np.array([[0, 0]])))


def test_top_k_positives_are_bool():
    assert metrics.top_k_positives(torch.tensor([[0.5, 0.3, 0.2]]), 1).dtype == torch.bool


def test_cf1_of1_with_one_class_below_half(no_warnings):
    # class 0: tp 1 of 4 predicted and 2 positives -> P 1/4, R 1/2, F1 1/3; class 1 has no positive
    positives = np.array([[1, 1], [1, 0], [1, 0], [1, 0], [0, 0], [0, 1]], dtype=bool)
    targets = np.array([[1, 0], [0, 0], [0, 0], [0, 0], [1, 0], [0, 0]])
    cf1, of1 = metrics.cf1_of1(positives, targets)
    assert cf1 == pytest.approx(100 / 3) and of1 == pytest.approx(100 / 3)


def test_cf1_of1_when_nothing_is_right_or_nothing_is_positive(no_warnings):
    positives = np.array([[1, 0], [0, 0]], dtype=bool)
    assert metrics.cf1_of1(positives, np.array([[0, 1], [0, 0]])) == (0.0, 0.0)  # P = R = 0
    cf1, of1 = metrics.cf1_of1(positives, np.zeros((2, 2)))
    assert math.isnan(cf1) and math.isnan(of1)
