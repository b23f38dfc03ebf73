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
    flt = ssl.OODFilter(conf_thresh=0.5, quantile=0.5, momentum=0.9)
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


# ---------------------------------------------------------------- FixMatchStep
SCALE = 100.0


def scaled(*rows):
    return SCALE * torch.tensor(rows)


def fixmatch_case():
    """One labeled batch and a weak/strong unlabeled pair whose outcome is known by hand.

    Labeled MCM = softmax(.5, .1, .1)[0] = 0.4272 for every image -> threshold 0.4272.
    Weak view: a confident (.9 -> p .99) with MCM .5267: passes; b confident, MCM .3792:
    the ID score fails; c unconfident (.525); d unconfident globally (.525), MCM .4453,
    confident on the local head. The strong view's argmax differs from the weak's.
    """
    groups_x = {"main": {"logits": scaled(*[[0.5, 0.1, 0.1]] * 4)}}
    weak = {
        "logits": scaled([0.9, 0.1, 0.1], [0.5, 0.3, 0.3], [0.5, 0.499, 0.1], [0.9, 0.899, -0.5]),
        "sfm_logits": scaled([0.5, 0.499, 0.1], [0.9, 0.1, 0.1], [0.1, 0.9, 0.1], [0.1, 0.1, 0.9]),
    }
    strong = {
        "logits": scaled([0.1, 0.9, 0.1], [0.1, 0.1, 0.9], [0.9, 0.1, 0.1], [0.1, 0.9, 0.1]) / 20,
        "sfm_logits": scaled([0.1, 0.9, 0.1], [0.9, 0.1, 0.1], [0.9, 0.1, 0.1], [0.9, 0.1, 0.1]) / 20,
    }
    seen = []

    def forward(images, groups_weak):
        seen.append((images, groups_weak))
        return {"main": weak if groups_weak is None else strong}

    return groups_x, weak, strong, forward, seen


def test_fixmatch_step_masks_each_head_by_confidence_and_the_labeled_id_threshold():
    groups_x, weak, strong, forward, seen = fixmatch_case()
    step = ssl.FixMatchStep({"main": {"global": "logits", "local": "sfm_logits"}}, 0.7, "mcm", 0.05)
    weak_images, strong_images = torch.zeros(4, 1), torch.ones(4, 1)
    hidden = torch.tensor([0, 1, 5, 2])  # c is OOD (class 5 >= 3)
    losses = step(groups_x, forward, weak_images, strong_images, SCALE, hidden, 3)
    # global head keeps only a (pseudo 0 from the WEAK view); local head keeps only d (pseudo 2)
    expected = (
        F.cross_entropy(strong["logits"][:1], torch.tensor([0]))
        + F.cross_entropy(strong["sfm_logits"][3:], torch.tensor([2]))
    ) / 4
    assert torch.allclose(losses["main"], expected, atol=1e-6)
    # the weak view runs first, without a guide; the strong view gets the weak outputs
    assert seen[0][0] is weak_images and seen[0][1] is None
    assert seen[1][0] is strong_images and seen[1][1]["main"] is weak
    # the threshold is the labeled batch's 0.05 quantile of MCM, not the unlabeled one's
    labeled_mcm = torch.softmax(torch.tensor([0.5, 0.1, 0.1]), 0)[0].item()
    assert step.state()["main"] == pytest.approx(labeled_mcm)
    assert step.stats["main", "global"].summary() == {"pass_rate": 25.0, "precision": 100.0, "ood_rejection": 100.0}
    assert step.stats["main", "local"].summary()["pass_rate"] == 25.0


def test_fixmatch_step_keeps_no_confident_image_whose_id_score_fails():
    groups_x, weak, strong, forward, _ = fixmatch_case()
    # b: 0.9 confidence on the local head but its global MCM (.3792) is below the threshold
    step = ssl.FixMatchStep({"main": {"local": "sfm_logits"}}, 0.7, "mcm", 0.05)
    step(groups_x, forward, None, None, SCALE)
    assert step.stats["main", "local"].passed == 1  # d only, never b


def test_fixmatch_step_filter_lifetime():
    groups_x, _, _, forward, _ = fixmatch_case()
    for lifetime, after_epoch in (("run", pytest.approx(0.4272, abs=1e-4)), ("epoch", float("-inf"))):
        step = ssl.FixMatchStep({"main": {"global": "logits"}}, 0.7, "mcm", 0.05, lifetime=lifetime)
        step(groups_x, forward, None, None, SCALE)
        step.start_epoch()
        assert step.state()["main"] == after_epoch
        assert step.stats["main", "global"].seen == 0  # diagnostics are per epoch either way
    with pytest.raises(ValueError, match="FILTER_LIFETIME='forever'"):
        ssl.FixMatchStep({"main": {"global": "logits"}}, 0.7, "mcm", 0.05, lifetime="forever")
    with pytest.raises(ValueError, match="TRAINER.SSL.SCORE"):
        ssl.FixMatchStep({"main": {"global": "logits"}}, 0.7, "energy", 0.05)


def test_fixmatch_step_state_round_trips():
    groups_x, _, _, forward, _ = fixmatch_case()
    step = ssl.FixMatchStep({"a": {"global": "logits"}, "b": {"global": "logits"}}, 0.7, "mcm", 0.05)
    step.load_state({"a": 0.25, "b": 0.5})
    assert step.state() == {"a": 0.25, "b": 0.5}


# ---------------------------------------------------------------- edges and defaults
def test_confidence_at_the_threshold_is_kept():
    # FixMatch keeps max q >= tau; 0.75 and 0.5 are exact in fp32
    _, _, mask = ssl.hard_pseudo_labels(torch.tensor([[0.75, 0.25], [0.5, 0.5]]), 0.75)
    assert mask.tolist() == [True, False]
    flt = ssl.OODFilter(conf_thresh=0.75, quantile=0.5)
    assert flt(torch.tensor([0.75, 0.5]), torch.tensor([0.0, 0.0])).tolist() == [True, False]


def test_filter_momentum_defaults_to_09():
    flt = ssl.OODFilter(conf_thresh=0.5, quantile=0.5)
    flt.update(torch.tensor([0.2, 0.4]))
    flt.update(torch.tensor([0.6, 0.8]))
    assert flt.threshold == pytest.approx(0.9 * 0.3 + 0.1 * 0.7)


def test_pseudo_label_stats_accumulate_over_the_epoch():
    stats = ssl.PseudoLabelStats()
    # batch 1: two of three pass, one right; of the OOD images (labels >= 2) one is rejected
    stats.update(torch.tensor([True, True, False]), torch.tensor([0, 1, 0]), torch.tensor([0, 3, 4]), num_id=2)
    # batch 2: two of four pass, both right; both OOD images are rejected
    mask = torch.tensor([True, True, False, False])
    stats.update(mask, torch.tensor([1, 0, 0, 0]), torch.tensor([1, 0, 2, 5]), num_id=2)
    assert (stats.seen, stats.passed, stats.passed_known, stats.correct) == (7, 4, 4, 3)
    assert (stats.ood_seen, stats.ood_rejected) == (4, 3)
    assert stats.summary() == pytest.approx({"pass_rate": 400 / 7, "precision": 75.0, "ood_rejection": 75.0})
    assert stats.log_line() == "pass_rate 57.1% precision 75.0% ood_rejection 75.0% (n=7)"


def test_pseudo_label_stats_without_num_id_count_the_pass_rate_only():
    stats = ssl.PseudoLabelStats()
    stats.update(torch.tensor([True]), torch.tensor([0]), torch.tensor([0]), num_id=None)
    assert stats.summary() == {"pass_rate": 100.0}  # one image: 1 / 1
    stats.reset()
    assert stats.summary() == {"pass_rate": 0.0}  # nothing seen yet: no division by zero


def test_fixmatch_step_momentum_defaults_to_09_and_reaches_the_filters():
    groups_x, _, _, forward, _ = fixmatch_case()
    later_x = {"main": {"logits": scaled(*[[0.9, 0.1, 0.1]] * 4)}}
    first = torch.softmax(torch.tensor([0.5, 0.1, 0.1]), 0)[0].item()
    later = torch.softmax(torch.tensor([0.9, 0.1, 0.1]), 0)[0].item()
    for momentum in (None, 0.5):
        kwargs = {} if momentum is None else {"momentum": momentum}
        step = ssl.FixMatchStep({"main": {"global": "logits"}}, 0.7, "mcm", 0.05, **kwargs)
        step(groups_x, forward, None, None, SCALE)
        step(later_x, forward, None, None, SCALE)
        m = 0.9 if momentum is None else momentum
        assert step.state()["main"] == pytest.approx(m * first + (1 - m) * later)


def test_fixmatch_step_glmcm_reads_the_local_logits_divided_by_the_scale():
    local = torch.tensor([[[0.2, 0.0, 0.0], [0.0, 0.6, 0.0]], [[0.1, 0.1, 0.1], [0.3, 0.0, 0.0]]])
    groups_x = {"main": {"logits": scaled([0.5, 0.1, 0.1], [0.1, 0.1, 0.1]), "local_logits": SCALE * local}}

    def forward(images, groups_weak):
        return groups_x

    step = ssl.FixMatchStep({"main": {"global": "logits"}}, 0.7, "glmcm", 0.0)  # quantile 0: the minimum
    step(groups_x, forward, None, None, SCALE)

    def softmax_max(*row):
        return torch.softmax(torch.tensor(row), 0).max().item()

    # image 0: MCM(.5, .1, .1) + max(MCM(.2, 0, 0), MCM(0, .6, 0)); image 1: 1/3 + MCM(.3, 0, 0)
    score_0 = softmax_max(0.5, 0.1, 0.1) + max(softmax_max(0.2, 0, 0), softmax_max(0, 0.6, 0))
    score_1 = 1 / 3 + softmax_max(0.3, 0, 0)
    assert step.state()["main"] == pytest.approx(min(score_0, score_1), abs=1e-6)


def test_fixmatch_step_log_line_names_each_head_when_there_are_several():
    groups_x, _, _, forward, _ = fixmatch_case()
    one = ssl.FixMatchStep({"main": {"global": "logits"}}, 0.7, "mcm", 0.05)
    one(groups_x, forward, None, None, SCALE)
    assert one.log_line() == one.stats["main", "global"].log_line()
    two = ssl.FixMatchStep({"main": {"global": "logits", "local": "sfm_logits"}}, 0.7, "mcm", 0.05)
    two(groups_x, forward, None, None, SCALE)
    parts = two.log_line().split("; ")
    assert parts == [f"main/{head}: {two.stats['main', head].log_line()}" for head in ("global", "local")]
