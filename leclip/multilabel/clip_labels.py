"""CLIP pseudo-labels for multi-label images: class-wise bias and debiasing (CCD).

CCD (Kim & Shim) scores every class with CLIP's softmax over the classes, then corrects
CLIP's class-wise bias: for class c, the mean top-1 probability over the reliable images
whose top-1 class is c. Debiased label y = clamp(max(p, 1/LS_COEFF) / bias, 0, 1) -- the
label-smoothing floor first, then the division, as released; the bias has no floor.
"""
import torch


def entropy(probs):
    """Shannon entropy (nats) of each row of class probabilities [N, C] -> [N]."""
    return -(probs * torch.log(probs.clamp_min(1e-12))).sum(dim=-1)


def class_bias(probs, reliable=None):
    """[C] mean top-1 probability of each class over the (reliable) images whose top-1
    class it is. A class that is never top-1 gets the mean of the others' biases (the
    released code divides by zero there)."""
    top_prob, top_class = probs.max(dim=-1)
    if reliable is not None:
        top_prob, top_class = top_prob[reliable], top_class[reliable]
    num_classes = probs.shape[1]
    total = torch.zeros(num_classes, dtype=probs.dtype).index_add_(0, top_class, top_prob)
    count = torch.zeros(num_classes, dtype=probs.dtype).index_add_(0, top_class, torch.ones_like(top_prob))
    seen = count > 0
    if not bool(seen.any()):
        raise ValueError("class_bias: no (reliable) image to estimate CLIP's class bias from")
    bias = torch.where(seen, total / count.clamp_min(1), torch.zeros_like(total))
    bias[~seen] = bias[seen].mean()
    return bias


def debias(probs, bias, ls_coeff=20.0):
    """clamp(max(p, 1/ls_coeff) / bias, 0, 1): floor first, then divide by the class bias."""
    return (probs.clamp_min(1.0 / ls_coeff) / bias).clamp(0.0, 1.0)
