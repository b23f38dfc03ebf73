"""Pseudo-labels for unlabeled multi-label images from class-wise thresholds (CSA), and
their precision/recall against hidden labels.

The paper says "class-wise thresholds"; the rule follows CAP (Xie et al.): class k's
threshold makes its pseudo-positive rate on the unlabeled scores equal its positive rate
r_k in the labeled set. The ablation's global variant is one threshold for all classes,
matching the overall labeled positive rate.
Ours: a class is given n_k = floor(r_k * N + 1/2) pseudo-positives among the N unlabeled
images (its n_k highest scores): the threshold is the n_k-th highest score and an element
is pseudo-positive iff score >= threshold (ties at the threshold may add a few more). A
class without labeled positives (r_k = 0) gets an infinite threshold: no pseudo-positive.
Every other element is a pseudo-negative. Scores may be logits or probabilities (only
their order within a class, or overall for the global variant, matters).
"""
import math

import torch


def positive_rate(labels):
    """[C] share of images in which each class is positive; labels [N, C] multi-hot."""
    return labels.to(torch.float64).mean(dim=0)


def top_count_threshold(scores, count):
    """The count-th highest of the flat `scores`, +inf for count 0."""
    if count == 0:
        return math.inf
    return scores.topk(count).values[-1].item()


def check_scores(scores, labeled_labels):
    if scores.dim() != 2 or labeled_labels.dim() != 2 or scores.shape[1] != labeled_labels.shape[1]:
        raise ValueError(
            f"Unlabeled scores {tuple(scores.shape)} and labeled labels {tuple(labeled_labels.shape)}: "
            "use [N, C] and [M, C] over the same classes"
        )
    if scores.shape[0] == 0 or labeled_labels.shape[0] == 0:
        raise ValueError("Class-wise thresholds need at least one unlabeled and one labeled image")


def classwise_thresholds(scores, labeled_labels):
    """[C] thresholds on unlabeled scores [N, C] giving each class its labeled positive rate."""
    check_scores(scores, labeled_labels)
    counts = torch.floor(positive_rate(labeled_labels) * scores.shape[0] + 0.5).long()
    thresholds = [top_count_threshold(scores[:, k], int(n)) for k, n in enumerate(counts)]
    return torch.tensor(thresholds, dtype=scores.dtype, device=scores.device)


def global_threshold(scores, labeled_labels):
    """One threshold (a 0-dim tensor) on all unlabeled scores [N, C] giving the overall
    pseudo-positive rate the overall positive rate of the labeled labels."""
    check_scores(scores, labeled_labels)
    rate = labeled_labels.to(torch.float64).mean().item()
    count = math.floor(rate * scores.numel() + 0.5)
    return torch.tensor(top_count_threshold(scores.flatten(), count), dtype=scores.dtype, device=scores.device)


def threshold_pseudo_labels(scores, thresholds):
    """Hard pseudo-labels [N, C]: 1 where score >= its class threshold ([C] or one scalar)."""
    return (scores >= thresholds).to(scores.dtype)


def safe_ratio(numerator, denominator):
    """numerator / denominator, NaN where the denominator is 0 (undefined, not 0 or 1)."""
    numerator, denominator = numerator.to(torch.float64), denominator.to(torch.float64)
    return torch.where(denominator > 0, numerator / denominator.clamp_min(1), torch.full_like(numerator, math.nan))


def positive_counts(pseudo, hidden):
    """Per class [C]: (true positives, pseudo-positives, hidden positives) of hard labels."""
    predicted, actual = pseudo > 0.5, hidden > 0.5
    return (predicted & actual).sum(dim=0), predicted.sum(dim=0), actual.sum(dim=0)


def pseudo_label_quality(pseudo, hidden):
    """Precision and recall of hard pseudo-labels against the hidden labels (both [N, C]).

    Returns {"precision", "recall"} (micro, over every element, floats) and
    {"class_precision", "class_recall"} ([C] tensors); NaN where undefined (no
    pseudo-positive, resp. no hidden positive).
    """
    if pseudo.shape != hidden.shape:
        raise ValueError(f"Pseudo-labels {tuple(pseudo.shape)} and hidden labels {tuple(hidden.shape)} differ")
    true_pos, predicted, actual = positive_counts(pseudo, hidden)
    return {
        "precision": safe_ratio(true_pos.sum(), predicted.sum()).item(),
        "recall": safe_ratio(true_pos.sum(), actual.sum()).item(),
        "class_precision": safe_ratio(true_pos, predicted),
        "class_recall": safe_ratio(true_pos, actual),
    }


class QualityCounter:
    """Precision and recall of the hard pseudo-labels used over an epoch, summed batch by
    batch (whichever schedule made them)."""

    def __init__(self):
        self.true_pos = self.predicted = self.actual = 0

    def update(self, pseudo, hidden):
        true_pos, predicted, actual = positive_counts(pseudo, hidden)
        self.true_pos += int(true_pos.sum())
        self.predicted += int(predicted.sum())
        self.actual += int(actual.sum())

    def summary(self):
        """{"precision", "recall"} in percent, NaN where undefined."""
        ratio = safe_ratio(torch.tensor([self.true_pos] * 2), torch.tensor([self.predicted, self.actual]))
        return {"precision": 100.0 * ratio[0].item(), "recall": 100.0 * ratio[1].item()}
