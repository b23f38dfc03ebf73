"""CSA's pieces against hand computations: label-specific attention pooling, positive/
negative prompt logits, the asymmetric loss, class-wise and global thresholds with
pseudo-label precision/recall, label co-occurrence, contexts and their targets."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from leclip.multilabel import contexts, thresholds
from leclip.multilabel.asl import asymmetric_loss
from leclip.multilabel.contexts import (
    NO_CONTEXT,
    ContextHead,
    classes_without_positives,
    cluster_classes,
    context_loss,
    context_targets,
    cooccurrence,
)
from leclip.multilabel.dual_prompts import dual_logits, label_specific_dual_logits, split_dual
from leclip.multilabel.label_features import label_specific_features
from leclip.multilabel.thresholds import (
    classwise_thresholds,
    global_threshold,
    pseudo_label_quality,
    threshold_pseudo_labels,
)

SQRT2 = math.sqrt(2.0)


# --- label-specific features


def test_attention_pooling_by_hand():
    patches = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]])
    text = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    features, weights = label_specific_features(patches, text, tau=0.5)
    # cosines with t_0: 1, 0, 1/sqrt2; with t_1: 0, 1, 1/sqrt2; divided by tau 0.5
    for k, logits in enumerate(([2.0, 0.0, SQRT2], [0.0, 2.0, SQRT2])):
        e = [math.exp(v) for v in logits]
        w = [v / sum(e) for v in e]
        assert torch.allclose(weights[0, k], torch.tensor(w))
        expected = w[0] * patches[0, 0] + w[1] * patches[0, 1] + w[2] * patches[0, 2]
        assert torch.allclose(features[0, k], expected)


@pytest.mark.parametrize("width", [3, 7])
def test_the_patch_equal_to_the_text_gets_nearly_all_weight(width):
    torch.manual_seed(0)
    text = F.normalize(torch.randn(2, width), dim=-1)
    # four patches at cosine 0.9 to t_1 (0.9 t_1 + sqrt(0.19) u, u orthogonal to t_1) ...
    others = torch.randn(4, width)
    others = F.normalize(others - (others @ text[1]).unsqueeze(-1) * text[1], dim=-1)
    patches = torch.cat([0.9 * text[1] + math.sqrt(0.19) * others, 4.0 * text[1:2]]).unsqueeze(0)
    # ... and one in t_1's direction: weights e^10 : 1 each at the default tau 0.01
    features, weights = label_specific_features(patches, text)
    assert weights[0, 1, 4] == pytest.approx(1 / (1 + 4 * math.exp(-10)), rel=1e-5)
    assert torch.allclose(features[0, 1], patches[0, 4], atol=1e-3)
    assert torch.allclose(weights.sum(dim=-1), torch.ones(1, 2))


def test_gradients_reach_patches_and_text():
    torch.manual_seed(1)
    patches = torch.randn(2, 4, 6, requires_grad=True)
    text = torch.randn(3, 6, requires_grad=True)
    features, _ = label_specific_features(patches, text, tau=0.1)
    (features * torch.randn_like(features)).sum().backward()
    assert patches.grad.abs().sum() > 0 and text.grad.abs().sum() > 0


# --- positive / negative prompts


def test_split_dual_takes_set_0_as_positive():
    features = torch.arange(8.0).view(4, 2)
    positive, negative = split_dual(features)
    assert torch.equal(positive, features[:2]) and torch.equal(negative, features[2:])
    with pytest.raises(ValueError, match="even"):
        split_dual(features[:3])


def test_dual_logit_of_a_global_feature_by_hand():
    feature = torch.tensor([[3.0, 0.0]])
    positive = torch.tensor([[1.0, 1.0], [0.0, 2.0]])
    negative = torch.tensor([[0.0, 1.0], [-1.0, 0.0]])
    # class 0: cos+ = 1/sqrt2, cos- = 0; class 1: cos+ = 0, cos- = -1
    expected = 10.0 * torch.tensor([[1 / SQRT2 - 0.0, 0.0 - (-1.0)]])
    assert torch.allclose(dual_logits(feature, positive, negative, scale=10.0), expected)


def test_dual_logit_pairs_each_label_feature_with_its_own_prompts():
    positive = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    negative = torch.tensor([[0.0, 1.0], [1.0, 1.0]])
    features = torch.tensor([[[2.0, 0.0], [1.0, 0.0]]])  # f_0 = t_0^+ direction, f_1 = e_1
    # f_0: cos+ 1, cos- 0; f_1 against t_1: cos+ 0, cos- 1/sqrt2 (not against t_0)
    expected = 5.0 * torch.tensor([[1.0, -1 / SQRT2]])
    assert torch.allclose(dual_logits(features, positive, negative, scale=5.0), expected)


def test_label_specific_logits_pool_negatives_with_their_own_prompt_when_asked():
    positive = torch.tensor([[1.0, 0.0, 0.0]])
    negative = torch.tensor([[0.0, 1.0, 0.0]])
    patches = torch.tensor([[[5.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.0, 0.0, 5.0]]])
    shared, features, weights = label_specific_dual_logits(patches, positive, negative, scale=1.0)
    # one feature pooled by t^+: (nearly) the first patch, cos+ ~ 1, cos- ~ 0
    assert torch.allclose(features[0, 0], patches[0, 0], atol=1e-3) and weights.shape == (1, 1, 3)
    assert torch.allclose(shared, torch.tensor([[1.0]]), atol=1e-3)
    own, _, _ = label_specific_dual_logits(patches, positive, negative, scale=1.0, pool_negatives=True)
    # the negative prompt pools the second patch: cos- ~ 1 too
    assert torch.allclose(own, torch.tensor([[0.0]]), atol=1e-3)


# --- asymmetric loss


def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def asl_by_hand(x, y, gamma_pos, gamma_neg, clip):
    p = sigmoid(x)
    p_m = max(p - clip, 0.0)
    return -(y * (1 - p) ** gamma_pos * math.log(p) + (1 - y) * p_m**gamma_neg * math.log(1 - p_m))


def test_asl_by_hand_with_focusing_and_clip():
    logits = torch.tensor([[2.0, -1.0, 0.5, -3.0], [-0.5, 1.5, 0.0, 1.0]])
    targets = torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    per_element = asymmetric_loss(logits, targets, gamma_pos=1.0, gamma_neg=2.0, clip=0.1, reduction="none")
    for (i, j), x in np.ndenumerate(logits.numpy()):
        expected = asl_by_hand(float(x), float(targets[i, j]), 1.0, 2.0, 0.1)
        assert per_element[i, j].item() == pytest.approx(expected, rel=1e-5)
    assert per_element[0, 3] == 0  # p = 0.047 < clip: the shifted probability is 0
    # default reduction: sum over classes, mean over the 2 images; "sum" is the official
    image_mean = asymmetric_loss(logits, targets, gamma_pos=1.0, gamma_neg=2.0, clip=0.1)
    assert image_mean.item() == pytest.approx(per_element.sum().item() / 2, rel=1e-6)
    total = asymmetric_loss(logits, targets, gamma_pos=1.0, gamma_neg=2.0, clip=0.1, reduction="sum")
    assert total.item() == pytest.approx(per_element.sum().item(), rel=1e-6)


def test_asl_defaults_are_gamma_pos_0_gamma_neg_4_clip_005():
    logits = torch.tensor([[0.8, 1.2]])
    targets = torch.tensor([[1.0, 0.0]])
    expected = asl_by_hand(0.8, 1.0, 0.0, 4.0, 0.05) + asl_by_hand(1.2, 0.0, 0.0, 4.0, 0.05)
    assert asymmetric_loss(logits, targets).item() == pytest.approx(expected, rel=1e-5)


def test_asl_soft_targets_mix_the_two_terms():
    logits = torch.tensor([[0.3]])
    loss = asymmetric_loss(logits, torch.tensor([[0.25]]), gamma_pos=1.0, gamma_neg=2.0, clip=0.1)
    expected = 0.25 * asl_by_hand(0.3, 1.0, 1.0, 2.0, 0.1) + 0.75 * asl_by_hand(0.3, 0.0, 1.0, 2.0, 0.1)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_asl_weight_masks_elements_and_images():
    logits = torch.tensor([[1.0, -1.0], [0.5, 2.0]])
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    per_element = asymmetric_loss(logits, targets, reduction="none")
    mask = torch.tensor([[1.0, 0.0], [0.5, 1.0]])
    masked = asymmetric_loss(logits, targets, weight=mask)
    assert masked.item() == pytest.approx((per_element * mask).sum().item() / 2, rel=1e-6)
    per_image = asymmetric_loss(logits, targets, weight=torch.tensor([0.0, 1.0]))
    assert per_image.item() == pytest.approx(per_element[1].sum().item() / 2, rel=1e-6)
    with pytest.raises(ValueError, match="weight"):
        asymmetric_loss(logits, targets, weight=torch.ones(2, 3))


def test_asl_focusing_weight_is_detached_by_default():
    x, clip, gamma = 0.4, 0.05, 4.0
    logits = torch.tensor([[x]], requires_grad=True)
    asymmetric_loss(logits, torch.zeros(1, 1), gamma_neg=gamma, clip=clip).backward()
    p = sigmoid(x)
    p_m = p - clip
    # d/dx of -w log(1 - p_m) with w = p_m^gamma held constant
    assert logits.grad.item() == pytest.approx(p_m**gamma / (1 - p_m) * p * (1 - p), rel=1e-5)
    logits.grad = None
    asymmetric_loss(logits, torch.zeros(1, 1), gamma_neg=gamma, clip=clip, detach_focal_weight=False).backward()
    full = (gamma * p_m ** (gamma - 1) * -math.log(1 - p_m) + p_m**gamma / (1 - p_m)) * p * (1 - p)
    assert logits.grad.item() == pytest.approx(full, rel=1e-5)


# --- thresholds and pseudo-labels


# 10 unlabeled images x 3 classes, distinct scores per class
SCORES = torch.tensor(
    [
        [0.9, 0.1, 0.45],
        [0.8, 0.2, 0.55],
        [0.7, 0.95, 0.4],
        [0.6, 0.3, 0.3],
        [0.5, 0.85, 0.2],
        [0.4, 0.4, 0.1],
        [0.3, 0.5, 0.05],
        [0.2, 0.65, 0.15],
        [0.1, 0.05, 0.25],
        [0.05, 0.15, 0.35],
    ]
)
# 5 labeled images: positive rates 0.4, 0.2, 0 (class 2 never labeled positive)
LABELED = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0]])


def test_classwise_thresholds_give_the_labeled_positive_rate():
    thresholds = classwise_thresholds(SCORES, LABELED)
    assert thresholds[0].item() == pytest.approx(0.6)  # 4th highest of class 0
    assert thresholds[1].item() == pytest.approx(0.85)  # 2nd highest of class 1
    assert thresholds[2].item() == math.inf  # no labeled positive: no pseudo-positive
    pseudo = threshold_pseudo_labels(SCORES, thresholds)
    assert torch.allclose(pseudo.mean(dim=0), torch.tensor([0.4, 0.2, 0.0]))
    assert pseudo[:, 1].nonzero().flatten().tolist() == [2, 4]


def test_classwise_counts_round_half_up():
    labeled = torch.tensor([[1], [0], [0], [0]])  # rate 0.25 of 10 unlabeled images: 2.5 -> 3
    thresholds = classwise_thresholds(SCORES[:, :1], labeled)
    assert threshold_pseudo_labels(SCORES[:, :1], thresholds).sum().item() == 3


def test_global_threshold_gives_the_overall_labeled_rate():
    # overall labeled rate 3 / 15 = 0.2: the 6 highest of the 30 unlabeled scores
    threshold = global_threshold(SCORES, LABELED)
    assert threshold.item() == pytest.approx(0.65)
    pseudo = threshold_pseudo_labels(SCORES, threshold)
    assert pseudo.mean().item() == pytest.approx(0.2)
    assert pseudo.nonzero().tolist() == [[0, 0], [1, 0], [2, 0], [2, 1], [4, 1], [7, 1]]


def test_pseudo_label_precision_and_recall_by_hand():
    pseudo = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 0]])
    hidden = torch.tensor([[1, 0, 1], [0, 1, 0], [0, 0, 0], [1, 0, 1]])
    quality = pseudo_label_quality(pseudo, hidden)
    # true positives (0,0), (1,1): 2 of 4 pseudo-positives, 2 of 5 hidden positives
    assert quality["precision"] == pytest.approx(0.5) and quality["recall"] == pytest.approx(0.4)
    assert torch.allclose(quality["class_precision"][:2], torch.tensor([0.5, 0.5], dtype=torch.float64))
    assert torch.allclose(quality["class_recall"], torch.tensor([0.5, 1.0, 0.0], dtype=torch.float64))
    assert math.isnan(quality["class_precision"][2])  # class 2 has no pseudo-positive


# --- contexts


def test_cooccurrence_by_hand():
    labels = np.array([[1, 1, 0], [1, 0, 0], [0, 1, 1], [0, 0, 0]])
    # counts 2, 2, 1; co-counts (0,1) = 1, (0,2) = 0, (1,2) = 1
    expected = np.array([[1.0, 0.5, 0.0], [0.5, 1.0, 1 / SQRT2], [0.0, 1 / SQRT2, 1.0]])
    assert np.allclose(cooccurrence(labels), expected)


def planted_blocks():
    """Classes {0, 1, 2} co-occur, {3, 4} co-occur, one cross pair; class 5 never positive."""
    rows = [[1, 1, 0, 0, 0, 0], [0, 1, 1, 0, 0, 0], [1, 0, 1, 0, 0, 0], [1, 1, 1, 0, 0, 0]] * 3
    rows += [[0, 0, 0, 1, 1, 0], [0, 0, 0, 1, 0, 0], [0, 0, 0, 0, 1, 0]] * 3
    rows += [[0, 0, 1, 1, 0, 0]]
    return np.array(rows)


def test_spectral_clustering_recovers_planted_blocks():
    contexts = cluster_classes(planted_blocks(), n_contexts=2)
    assert contexts[0] == contexts[1] == contexts[2] != contexts[3] == contexts[4]
    assert set(contexts[:5]) == {0, 1} and contexts[5] == NO_CONTEXT


def test_contexts_reject_bad_requests():
    labels = planted_blocks()
    assert classes_without_positives(labels).tolist() == [5]
    with pytest.raises(ValueError, match="7 contexts for 6 classes"):
        cluster_classes(labels, n_contexts=7)
    with pytest.raises(ValueError, match=r"only 5 of 6 classes .*classes \[5\]"):
        cluster_classes(labels, n_contexts=6)
    assert cluster_classes(labels, n_contexts=1).tolist() == [0, 0, 0, 0, 0, NO_CONTEXT]


def test_context_target_of_an_image():
    class_context = [0, 0, 1, NO_CONTEXT]
    labels = torch.tensor([[1, 0, 0, 0], [0, 0, 1, 1], [0, 0, 0, 1], [1, 1, 1, 0]])
    expected = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    assert torch.equal(context_targets(labels, class_context, n_contexts=3), expected)
    soft = torch.tensor([[0.2, 0.7, 0.0, 0.9]])
    assert torch.allclose(context_targets(soft, class_context, n_contexts=3), torch.tensor([[0.7, 0.0, 0.0]]))


def test_context_head_and_loss():
    head = ContextHead(feature_dim=3, n_contexts=2)
    feature = torch.tensor([[1.0, 2.0, 2.0]])
    assert torch.allclose(head(5.0 * feature), head(feature))  # the feature is normalised
    with torch.no_grad():
        head.linear.weight.copy_(torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 1.5 * math.log(3.0)]]))
        head.linear.bias.zero_()
    logits = head(feature)  # unit feature (1, 2, 2) / 3: logits 0 and log 3
    assert torch.allclose(logits, torch.tensor([[0.0, math.log(3.0)]]))
    # BCE: target 1 at logit 0 -> log 2; target 0 at logit log 3 -> log(1 + 3)
    logits = logits.repeat(2, 1)
    targets = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    assert context_loss(logits, targets).item() == pytest.approx(math.log(8.0), rel=1e-6)
    masked = context_loss(logits, targets, weight=torch.tensor([1.0, 0.0]))
    assert masked.item() == pytest.approx(math.log(8.0) / 2, rel=1e-6)


# --- bad inputs and edge values of the parts above (each message names what was wrong)


def test_split_dual_of_an_odd_number_of_classes():
    features = torch.arange(12.0).view(6, 2)  # 3 classes: halves of 3 rows
    positive, negative = split_dual(features)
    assert torch.equal(positive, features[:3]) and torch.equal(negative, features[3:])


def test_class_cosine_rejects_label_features_of_another_class_count():
    text = torch.eye(3)[:2]
    with pytest.raises(ValueError, match=r"Image features \(1, 3, 3\): use \[B, D\] or \[B, C, D\] with C = 2"):
        dual_logits(torch.ones(1, 3, 3), text, text, scale=1.0)


def test_label_specific_logits_use_the_temperature_for_both_poolings():
    """Patches of width 2 but 3 patches (weights and features differ in shape), tau 1."""
    patches = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])
    positive, negative = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    unit = F.normalize(patches, dim=-1)[0]

    def pooled(text):
        weights = (unit @ text[0] / 1.0).softmax(dim=0)
        return weights @ patches[0]

    f_pos, f_neg = pooled(positive), pooled(negative)
    expected = 2.0 * (F.cosine_similarity(f_pos, positive[0], dim=0) - F.cosine_similarity(f_neg, negative[0], dim=0))
    logits, features, _ = label_specific_dual_logits(patches, positive, negative, 2.0, tau=1.0, pool_negatives=True)
    assert torch.allclose(features[0, 0], f_pos, atol=1e-6)
    assert torch.allclose(logits, expected.view(1, 1), atol=1e-6)


def test_attention_rejects_a_zero_temperature_and_mismatched_widths():
    with pytest.raises(ValueError, match="tau_a=0"):
        label_specific_features(torch.ones(1, 2, 3), torch.ones(1, 3), tau=0)
    with pytest.raises(ValueError, match="Patch width 3 and text width 4 differ"):
        label_specific_features(torch.ones(1, 2, 3), torch.ones(1, 4))


def test_asl_accepts_zero_clip_and_focusing_and_rejects_each_negative_value():
    logits, targets = torch.tensor([[1.0, -2.0]]), torch.tensor([[1.0, 0.0]])
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="sum")
    plain = asymmetric_loss(logits, targets, gamma_pos=0.0, gamma_neg=0.0, clip=0.0)
    assert plain.item() == pytest.approx(bce.item(), rel=1e-5)  # ASL without its parts is BCE
    for bad in ({"clip": -0.1}, {"gamma_pos": -1.0}, {"gamma_neg": -1.0}):
        with pytest.raises(ValueError, match="use values >= 0"):
            asymmetric_loss(logits, targets, **bad)
    with pytest.raises(ValueError, match=r"ASL targets \(1, 3\) do not match logits \(1, 2\)"):
        asymmetric_loss(logits, torch.ones(1, 3))


@pytest.mark.parametrize("shape", [(2, 2), (1, 3), (1, 1, 2), (2,)])
def test_asl_rejects_a_weight_of_another_shape(shape):
    logits, targets = torch.zeros(1, 2), torch.zeros(1, 2)
    with pytest.raises(ValueError, match=r"ASL weight .*: use \[B, C\], \[B, 1\] or \[B\] for logits \(1, 2\)"):
        asymmetric_loss(logits, targets, weight=torch.ones(shape))


@pytest.mark.parametrize("scores,labeled", [
    (torch.zeros(4), torch.zeros(2, 4)), (torch.zeros(4, 3), torch.zeros(2)), (torch.zeros(4, 3), torch.zeros(2, 2)),
])
def test_thresholds_reject_scores_and_labels_that_do_not_match(scores, labeled):
    for rule in (classwise_thresholds, global_threshold):
        with pytest.raises(ValueError, match="use \\[N, C\\] and \\[M, C\\] over the same classes"):
            rule(scores, labeled)


@pytest.mark.parametrize("unlabeled,labeled", [(0, 2), (4, 0)])
def test_thresholds_need_images_on_both_sides(unlabeled, labeled):
    with pytest.raises(ValueError, match="at least one unlabeled and one labeled image"):
        classwise_thresholds(torch.zeros(unlabeled, 3), torch.zeros(labeled, 3))


def test_cooccurrence_of_classes_seen_once_and_never():
    labels = np.array([[1, 1, 0], [0, 0, 0]])  # classes 0 and 1 once, together; class 2 never
    assert np.array_equal(cooccurrence(labels), np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))


@pytest.mark.filterwarnings("ignore:k >= N")  # sklearn's eigensolver note on a 5 x 5 affinity
def test_as_many_contexts_as_seen_classes_is_allowed():
    contexts = cluster_classes(planted_blocks(), n_contexts=5)
    assert sorted(contexts[:5].tolist()) == [0, 1, 2, 3, 4] and contexts[5] == NO_CONTEXT


def test_context_targets_of_integer_labels_and_bad_contexts():
    labels = torch.tensor([[1, 0], [0, 1]])  # integer labels: the targets are floats all the same
    targets = context_targets(labels, [0, 1], n_contexts=2)
    assert targets.dtype == torch.float32 and torch.equal(targets, torch.eye(2))
    for bad in ([0, 2], [0, NO_CONTEXT - 1]):
        with pytest.raises(ValueError, match=f"Context indices must lie in {NO_CONTEXT}..1"):
            context_targets(labels, bad, n_contexts=2)


def test_messages_name_the_mismatch():
    with pytest.raises(ValueError, match="3 prompt features: positive/negative prompts need an even number"):
        split_dual(torch.zeros(3, 2))
    with pytest.raises(ValueError, match="ASL reduction 'mean'"):
        asymmetric_loss(torch.zeros(1, 2), torch.zeros(1, 2), reduction="mean")
    with pytest.raises(ValueError, match=r"Pseudo-labels \(2, 3\) and hidden labels \(2, 4\) differ"):
        pseudo_label_quality(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="3 class contexts for labels of 2 classes"):
        context_targets(torch.zeros(1, 2), [0, 0, 1], n_contexts=2)


def test_thresholds_keep_the_scores_dtype():
    scores, labeled = torch.rand(6, 2, dtype=torch.float64), torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert classwise_thresholds(scores, labeled).dtype == global_threshold(scores, labeled).dtype == torch.float64


# ---------------------------------------------------------------- context head on label features, narrowing
def test_label_context_head_by_hand():
    head = contexts.LabelContextHead(num_classes=2, feature_dim=2, n_contexts=2)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[[1.0, 0], [0, 2]], [[0, 0], [3, 0]]]))  # [K, C, D]
        head.bias.copy_(torch.tensor([0.5, -1.0]))
    features = torch.tensor([[[2.0, 0], [3, 4]]])  # f_1 = (1, 0) and f_2 = (.6, .8) once normalised
    # context 0: 0.5 + 1 * 1 + 2 * .8 = 3.1; context 1: -1 + 3 * .6 = 0.8
    assert torch.allclose(head(features), torch.tensor([[3.1, 0.8]]))
    # the head starts at its bias on any feature, and rejects a feature per class of another shape
    assert torch.equal(contexts.LabelContextHead(2, 2, 3)(features), torch.zeros(1, 3))
    with pytest.raises(ValueError, match=r"use \[B, 3, 2\]"):
        contexts.LabelContextHead(3, 2, 2)(features)


def test_narrowing_multiplies_each_score_by_its_context_posterior():
    scores = torch.tensor([[0.8, 0.5, 0.4], [0.2, 0.9, 0.6]])
    context_logits = torch.tensor([[0.0, math.log(3)], [math.log(1 / 3), 0.0]])  # sigmoid: .5 .75 / .25 .5
    narrowed = contexts.narrow_scores(scores, context_logits, [1, 0, contexts.NO_CONTEXT])
    assert torch.allclose(narrowed, torch.tensor([[0.8 * 0.75, 0.5 * 0.5, 0.4], [0.2 * 0.5, 0.9 * 0.25, 0.6]]))


def test_context_accuracy_by_hand():
    logits = torch.tensor([[1.0, -1.0], [0.5, 0.5]])
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert contexts.context_accuracy(logits, targets) == (75.0, 50.0)


def test_quality_counter_sums_batches():
    counter = thresholds.QualityCounter()
    counter.update(torch.tensor([[1.0, 0], [1, 1]]), torch.tensor([[1.0, 1], [0, 1]]))
    counter.update(torch.tensor([[0.0, 0]]), torch.tensor([[1.0, 0]]))
    # 2 true positives of 3 predicted and 4 actual
    assert counter.summary() == pytest.approx({"precision": 200 / 3, "recall": 50.0})
    assert math.isnan(thresholds.QualityCounter().summary()["precision"])
