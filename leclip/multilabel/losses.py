"""Multi-label training losses: CCD's (soft-target BCE, view consistency) and the
single-positive losses of the annotation-free baselines (AN, AN-LS, ROLE).

All take logits [B, C] and return a scalar mean. The single-positive losses take
`positives` [B, C] (1 for the observed positive, e.g. CLIP's top-1 class, 0 elsewhere).
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def soft_bce(logits, targets, weights=None):
    """Mean BCE against soft targets in [0, 1] (CCD's loss). `weights` [B]: per-image
    weights (released: 1 for reliable images, `loss_coeff` (1) for unreliable ones)."""
    loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    if weights is not None:
        loss = loss * weights[:, None]
    return loss.mean()


def consistency_loss(logits_view1, logits_view2):
    """BCE(logits(view2), sigmoid(logits(view1))) with view 1 detached, as released:
    gradients flow through the second view only."""
    return F.binary_cross_entropy_with_logits(logits_view2, torch.sigmoid(logits_view1.detach()))


def assume_negative_loss(logits, positives):
    """AN: every unobserved label is taken as negative; BCE over all entries."""
    return F.binary_cross_entropy_with_logits(logits, positives.to(logits.dtype))


def assume_negative_ls_loss(logits, positives, smoothing=0.1):
    """AN with label smoothing: targets 1 - smoothing for the observed positives and
    smoothing for the assumed negatives (0.1 as in Cole et al.'s AN-LS)."""
    positives = positives.to(logits.dtype)
    return F.binary_cross_entropy_with_logits(logits, positives * (1 - smoothing) + (1 - positives) * smoothing)


def _logit(p):
    return math.log(p / (1 - p))


class LabelEstimator(nn.Module):
    """ROLE's learned label estimates: one logit per (training image, class).

    Initialised as in Cole et al. (CVPR 2021), as we reconstruct it: observed positives at
    sigmoid^-1(0.995), every other entry uniform in +-sigmoid^-1(0.6) (estimates 0.4-0.6).
    Train it with the classifier's optimizer (its learning rate is the trainer's choice)."""

    def __init__(self, positives, seed=0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        spread = _logit(0.6)
        logits = spread * (2 * torch.rand(positives.shape, generator=generator) - 1)
        logits[positives.cpu() > 0] = _logit(0.995)
        self.logits = nn.Parameter(logits.to(positives.device))

    def forward(self, indices):
        """Logits [B, C] of the estimates of the images `indices` (for `role_loss`)."""
        return self.logits[indices]

    def estimates(self):
        """All current estimates [N, C] in (0, 1)."""
        return torch.sigmoid(self.logits.detach())


def expected_positives_penalty(probs, expected_num_pos):
    """((mean over the batch of the number of predicted positives) - k)^2 / C^2."""
    return (probs.sum(dim=1).mean() - expected_num_pos) ** 2 / probs.shape[1] ** 2


def role_loss(logits, estimate_logits, positives, expected_num_pos):
    """ROLE (regularized online label estimation, Cole et al. CVPR 2021), reconstructed
    from the paper: the classifier f and the label estimates y~ each learn from the
    observed positives and from the other one, with the other side detached:
      0.5 * mean[ 1[pos] (-log f) + 1[pos] (-log y~) ]
    + 0.5 * mean[ BCE(f, sg(y~)) + BCE(y~, sg(f)) ]
    + 0.5 * ( R_k(f) + R_k(y~) ),  R_k = `expected_positives_penalty`,
    means over all B x C entries; k = `expected_num_pos`, the expected number of positives
    per image (a prior: the paper takes it from the data; here the trainer's choice).
    Computed from logits (ours: no log epsilon)."""
    positives = positives.to(logits.dtype)
    estimates = torch.sigmoid(estimate_logits)
    preds = torch.sigmoid(logits)
    observed = positives * (F.softplus(-logits) + F.softplus(-estimate_logits))  # -log sigmoid
    cross = F.binary_cross_entropy_with_logits(logits, estimates.detach(), reduction="none")
    cross = cross + F.binary_cross_entropy_with_logits(estimate_logits, preds.detach(), reduction="none")
    penalty = expected_positives_penalty(preds, expected_num_pos)
    penalty = penalty + expected_positives_penalty(estimates, expected_num_pos)
    return 0.5 * (observed.mean() + cross.mean() + penalty)
