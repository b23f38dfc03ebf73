"""Asymmetric loss (ASL, Ridnik et al., ICCV 2021) for multi-label logits.

As the official formulation, with p = sigmoid(logit) and the shifted probability
p_m = max(p - clip, 0) on negatives:
    L+ = (1 - p)^gamma_pos * log(p),    L- = p_m^gamma_neg * log(1 - p_m),
logs of probabilities clamped at `eps`, loss = -(y L+ + (1 - y) L-); defaults gamma_pos 0,
gamma_neg 4, clip 0.05, eps 1e-8 as the official training scripts, which also keep the
focusing weights out of the gradient (`detach_focal_weight=True`).
Ours: a soft target y in [0, 1] mixes the two terms with weights y and 1 - y (for hard
targets this is the official loss; fed soft targets, the official expression would mix
the two exponents and probabilities inside one weight); `weight` multiplies each element's
loss ([B, C] per element, [B] or [B, 1] per image, e.g. unlabeled images with
pseudo-labels); the default reduction sums over classes and averages over the
images of the batch, weight-0 images included (the official code sums over the batch, so
its scale grows with the batch size).
"""
import torch

REDUCTIONS = ("image_mean", "sum", "none")


def asymmetric_loss(
    logits,
    targets,
    weight=None,
    gamma_pos=0.0,
    gamma_neg=4.0,
    clip=0.05,
    eps=1e-8,
    detach_focal_weight=True,
    reduction="image_mean",
):
    """ASL of logits [B, C] against hard or soft targets [B, C]; see the module docstring.

    reduction: "image_mean" (ours, default) sum over classes, mean over the B images;
    "sum" over every element (the official); "none" the [B, C] element losses.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"ASL reduction {reduction!r}: use one of {REDUCTIONS}")
    if targets.shape != logits.shape:
        raise ValueError(f"ASL targets {tuple(targets.shape)} do not match logits {tuple(logits.shape)}")
    if clip < 0 or gamma_pos < 0 or gamma_neg < 0:
        raise ValueError(f"ASL clip={clip}, gamma_pos={gamma_pos}, gamma_neg={gamma_neg}: use values >= 0")
    logits = logits.float()  # fp16 would round eps 1e-8 to 0 and log(0) to -inf
    targets = targets.float()
    prob = torch.sigmoid(logits)
    shifted = (prob - clip).clamp_min(0.0)  # probability shifting, negatives only
    weight_pos = (1.0 - prob).pow(gamma_pos)
    weight_neg = shifted.pow(gamma_neg)
    if detach_focal_weight:
        weight_pos, weight_neg = weight_pos.detach(), weight_neg.detach()
    log_pos = torch.log(prob.clamp_min(eps))
    log_neg = torch.log((1.0 - shifted).clamp_min(eps))
    loss = -(targets * weight_pos * log_pos + (1.0 - targets) * weight_neg * log_neg)
    if weight is not None:
        if weight.dim() == 1:
            weight = weight.unsqueeze(-1)
        if weight.dim() != 2 or weight.shape[0] != loss.shape[0] or weight.shape[1] not in (1, loss.shape[1]):
            raise ValueError(
                f"ASL weight {tuple(weight.shape)}: use [B, C], [B, 1] or [B] for logits {tuple(loss.shape)}"
            )
        loss = loss * weight.float()
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / logits.shape[0]
