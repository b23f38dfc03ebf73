"""Shared semi-supervised pieces against hand computations."""
import pytest
import torch
import torch.nn.functional as F

from leclip import ssl


def test_hard_pseudo_labels_and_mask():
    probs = torch.tensor([[0.8, 0.2], [0.4, 0.6], [0.1, 0.9]])
    labels, confidence, mask = ssl.hard_pseudo_labels(probs, 0.7)
    assert labels.tolist() == [0, 1, 1]
    assert torch.allclose(confidence, torch.tensor([0.8, 0.6, 0.9]))
    assert mask.tolist() == [True, False, True]


def test_id_scores_by_hand():
    sims = torch.tensor([[0.3, 0.1]])
    assert ssl.id_score("msp", sims * 100).item() == pytest.approx(torch.softmax(torch.tensor([30.0, 10.0]), 0)[0].item())
    mcm = torch.exp(torch.tensor(0.3)) / (torch.exp(torch.tensor(0.3)) + torch.exp(torch.tensor(0.1)))
    assert ssl.id_score("mcm", sims).item() == pytest.approx(mcm.item())
    local = torch.tensor([[[0.0, 0.5], [0.2, 0.2]]])  # two patches
    local_best = torch.softmax(torch.tensor([0.0, 0.5]), 0).max()
    assert ssl.id_score("glmcm", sims, local).item() == pytest.approx((mcm + local_best).item())


def test_id_score_errors():
    with pytest.raises(ValueError, match="use one of .*msp"):
        ssl.id_score("energy", torch.zeros(1, 2))
    with pytest.raises(ValueError, match="glmcm needs local"):
        ssl.id_score("glmcm", torch.zeros(1, 2))


def test_filter_threshold_is_an_ema_of_labeled_quantiles():
    flt = ssl.OODFilter(conf_thresh=0.5, score_name="mcm", quantile=0.5, momentum=0.9)
    everything = flt(torch.tensor([0.9]), torch.tensor([-5.0]))
    assert everything.tolist() == [True]  # before any labeled batch every score passes
    flt.update(torch.tensor([0.2, 0.4]))  # median 0.3
    flt.update(torch.tensor([0.6, 0.8]))  # median 0.7 -> 0.9 * 0.3 + 0.1 * 0.7
    assert flt.threshold == pytest.approx(0.34)
    mask = flt(torch.tensor([0.9, 0.9, 0.4]), torch.tensor([0.35, 0.33, 0.9]))
    assert mask.tolist() == [True, False, False]


def test_fixmatch_loss_normalises_by_batch_size():
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    pseudo = torch.tensor([0, 0, 1])
    mask = torch.tensor([1.0, 0.0, 1.0])
    per_image = F.cross_entropy(logits, pseudo, reduction="none")
    expected = (per_image[0] + per_image[2]) / 3
    assert ssl.fixmatch_loss(logits, pseudo, mask).item() == pytest.approx(expected.item())


def test_pseudo_label_stats_by_hand():
    stats = ssl.PseudoLabelStats()
    mask = torch.tensor([True, True, False, True, False])
    pseudo = torch.tensor([0, 1, 1, 0, 0])
    hidden = torch.tensor([0, 0, 1, 3, 2])  # num_id = 2: the last two are OOD
    stats.update(mask, pseudo, hidden, num_id=2)
    summary = stats.summary()
    assert summary["pass_rate"] == pytest.approx(60.0)
    assert summary["precision"] == pytest.approx(100 / 3)  # 1 of 3 passed is right
    assert summary["ood_rejection"] == pytest.approx(50.0)  # label 2 rejected, label 3 passed


def test_stats_skip_unknown_hidden_labels():
    stats = ssl.PseudoLabelStats()
    stats.update(torch.tensor([True, True]), torch.tensor([0, 1]), torch.tensor([0, -1]), num_id=2)
    assert stats.summary()["precision"] == pytest.approx(100.0)
    assert stats.summary()["pass_rate"] == pytest.approx(100.0)
