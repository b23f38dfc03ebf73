"""Metric functions (values in percent), shared by the evaluators and the tests.

Open-set metrics follow docs/PROTOCOLS.md: closed accuracy over ID test images with the
argmax over ID classes; balanced accuracy over K+1 classes (OOD test images form one
"unknown" class, predicted when the ID score is below the threshold), as IOMatch
defines it; AUROC of the ID score (ID positive). Multi-label: mAP over the classes with
at least one positive, and CF1/OF1 of per-class independent decisions over the same
classes (a trained model's sigmoid at 0.5, zero-shot CLIP's top-k classes): never a
softmax thresholded at 0.5, which allows at most one positive per image.
"""
import warnings

import numpy as np
import torch
from sklearn.metrics import average_precision_score, balanced_accuracy_score, roc_auc_score


def _np(x):
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def closed_accuracy(probs, labels, num_id):
    """Top-1 accuracy over the ID test images (labels < num_id), argmax over ID classes."""
    probs, labels = _np(probs), _np(labels)
    is_id = labels < num_id
    if not is_id.any():
        return float("nan")
    return 100.0 * float((probs[is_id, :num_id].argmax(axis=1) == labels[is_id]).mean())


def ood_threshold(labeled_scores, quantile):
    """The `quantile` quantile of the labeled ID images' scores: no OOD label is used."""
    scores = _np(labeled_scores).astype(np.float64)
    if scores.size == 0:
        raise ValueError("ood_threshold: no labeled score to take the quantile of")
    return float(np.quantile(scores, quantile))


def open_set_balanced_accuracy(pred_id, is_unknown_pred, labels, num_id):
    """Mean per-class recall over the K ID classes plus one 'unknown' class."""
    pred = np.where(_np(is_unknown_pred), num_id, _np(pred_id))
    labels = _np(labels)
    target = np.where(labels >= num_id, num_id, labels)
    with warnings.catch_warnings():
        # an ID-only test set (Semi-Aves) has no true "unknown": its recall is not averaged
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        return 100.0 * balanced_accuracy_score(target, pred)


def auroc(scores_id, scores_ood):
    scores_id, scores_ood = _np(scores_id), _np(scores_ood)
    if len(scores_id) == 0 or len(scores_ood) == 0:
        return float("nan")
    y = np.concatenate([np.ones(len(scores_id)), np.zeros(len(scores_ood))])
    return 100.0 * roc_auc_score(y, np.concatenate([scores_id, scores_ood]))


def mean_average_precision(scores, targets):
    scores, targets = _np(scores), _np(targets)
    aps = [
        average_precision_score(targets[:, c], scores[:, c])
        for c in range(targets.shape[1])
        if targets[:, c].sum() > 0
    ]
    return 100.0 * float(np.mean(aps)) if aps else float("nan")


def top_k_positives(scores, k):
    """[N, C] bool: each image's k highest-scoring classes (zero-shot CLIP's rule)."""
    scores = torch.as_tensor(scores)
    k = min(k, scores.shape[1])
    return torch.zeros_like(scores, dtype=torch.bool).scatter_(1, scores.topk(k, dim=1).indices, True)


def cf1_of1(positives, targets):
    """Per-class-averaged F1 (CF1) and overall F1 (OF1) of predicted positives [N, C]
    (bool), over the classes with at least one positive target, as mAP."""
    pred = _np(positives).astype(np.float64)
    targets = _np(targets).astype(np.float64)
    present = targets.sum(axis=0) > 0
    pred, targets = pred[:, present], targets[:, present]
    if targets.shape[1] == 0:
        return float("nan"), float("nan")
    tp = (pred * targets).sum(axis=0)
    n_pred, n_pos = pred.sum(axis=0), targets.sum(axis=0)
    cp = np.mean(np.divide(tp, n_pred, out=np.zeros_like(tp), where=n_pred > 0))
    cr = np.mean(tp / n_pos)
    op = tp.sum() / max(n_pred.sum(), 1)
    orec = tp.sum() / n_pos.sum()
    cf1 = 2 * cp * cr / (cp + cr) if cp + cr > 0 else 0.0
    of1 = 2 * op * orec / (op + orec) if op + orec > 0 else 0.0
    return 100.0 * cf1, 100.0 * of1
