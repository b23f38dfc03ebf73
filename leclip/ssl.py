"""Shared semi-supervised pieces: pseudo-labels, ID scores, the filter F, diagnostics.

Used by CFSG-CLIP and by every baseline's `TRAINER.SSL.MODE fixmatch`, so the table
compares methods, not training recipes.
"""
import torch
import torch.nn.functional as F

ID_SCORES = ("msp", "mcm", "glmcm")


def hard_pseudo_labels(probs, conf_thresh):
    """FixMatch's hard labels: (argmax, its probability, probability >= threshold)."""
    confidence, labels = probs.max(dim=-1)
    return labels, confidence, confidence >= conf_thresh


def mcm(similarities, temperature=1.0):
    """Maximum concept matching: max softmax of cosine similarities / T (T = 1)."""
    return (similarities / temperature).softmax(dim=-1).max(dim=-1).values


def id_score(name, logits_global, logits_local=None):
    """ID score of each image (higher = more in-distribution).

    msp: max softmax of the logits as given. mcm: pass cosine similarities (logits
    divided by the logit scale). glmcm: MCM of the global similarities plus the max
    over patches of the MCM of the local ones ([B, N, C]).
    """
    if name == "msp":
        return logits_global.softmax(dim=-1).max(dim=-1).values
    if name == "mcm":
        return mcm(logits_global)
    if name == "glmcm":
        if logits_local is None:
            raise ValueError("ID score glmcm needs local (patch) similarities: this method has none; use msp or mcm")
        return mcm(logits_global) + mcm(logits_local).max(dim=-1).values
    raise ValueError(f"Unknown ID score {name!r} (TRAINER.SSL.SCORE): use one of {ID_SCORES}")


class OODFilter:
    """Filter F: keep an unlabeled image iff confident and its ID score passes.

    The threshold (ours) follows the test-time rule: the `quantile` quantile of the
    labeled images' ID scores, tracked as an exponential moving average (momentum 0.9)
    over batches. Before any labeled batch, every score passes.
    """

    def __init__(self, conf_thresh, score_name, quantile, momentum=0.9):
        if score_name not in ID_SCORES:
            raise ValueError(f"Unknown ID score {score_name!r} (TRAINER.SSL.SCORE): use one of {ID_SCORES}")
        self.conf_thresh = conf_thresh
        self.score_name = score_name
        self.quantile = quantile
        self.momentum = momentum
        self.threshold = float("-inf")

    def update(self, labeled_scores):
        value = torch.quantile(labeled_scores.detach().float().cpu(), self.quantile).item()
        if self.threshold == float("-inf"):
            self.threshold = value
        else:
            self.threshold = self.momentum * self.threshold + (1 - self.momentum) * value

    def __call__(self, confidence, scores):
        return (confidence >= self.conf_thresh) & (scores >= self.threshold)


def fixmatch_loss(logits_strong, pseudo_labels, mask):
    """Mean over the batch of mask * CE (FixMatch normalises by batch size)."""
    per_image = F.cross_entropy(logits_strong.float(), pseudo_labels, reduction="none")
    return (per_image * mask.float()).mean()


class PseudoLabelStats:
    """Per-epoch diagnostics of the filter: pass rate, precision, OOD rejection.

    Precision counts passed images whose hidden label is known (OOD counts as wrong).
    """

    def __init__(self):
        self.reset()

    def reset(self):
        self.seen = self.passed = self.passed_known = self.correct = self.ood_seen = self.ood_rejected = 0

    def update(self, mask, pseudo_labels, hidden_labels=None, num_id=None):
        mask = mask.bool().cpu()
        self.seen += mask.numel()
        self.passed += int(mask.sum())
        if hidden_labels is None or num_id is None:
            return
        hidden = hidden_labels.cpu()
        known = hidden >= 0  # -1: an unlabeled ID image whose class nobody knows (Semi-Aves U_in)
        is_ood = hidden >= num_id
        self.passed_known += int((mask & known).sum())
        self.correct += int((mask & ~is_ood & (pseudo_labels.cpu() == hidden)).sum())
        self.ood_seen += int(is_ood.sum())
        self.ood_rejected += int((is_ood & ~mask).sum())

    def summary(self):
        out = {"pass_rate": 100.0 * self.passed / max(self.seen, 1)}
        if self.passed_known:
            out["precision"] = 100.0 * self.correct / self.passed_known
        if self.ood_seen:
            out["ood_rejection"] = 100.0 * self.ood_rejected / self.ood_seen
        return out

    def log_line(self):
        return " ".join(f"{k} {v:.1f}%" for k, v in self.summary().items()) + f" (n={self.seen})"
