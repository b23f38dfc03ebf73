"""Label-specific image features (CSA): one image feature per class, pooled from the patches.

From the paper: for each class k, the patch features are attention-pooled with weights
w_ik = softmax over patches i of sim(patch_i, t_k) / tau_a, giving f_k; f_k is then
aligned with t_k alone (one-to-one) instead of every t_k with one global feature.
Ours: sim is the cosine; the pooled features are the patch features as given (not
normalised, as the SFM pools them); tau_a defaults to 0.01, the temperature CLIP ViT-B/16
learned for its image-text cosines (logit scale 100), so the patch softmax is as sharp as
CLIP's own class softmax. Larger tau_a tends to the mean patch (the same feature for every
class), smaller to one patch per class (the others get almost no gradient); a backbone
with another logit scale may pass 1 / its logit scale.
"""
import torch
import torch.nn.functional as F

DEFAULT_TAU = 0.01  # (ours) CLIP ViT-B/16's temperature, see the module docstring


def attention_weights(patches, text, tau=DEFAULT_TAU):
    """[B, C, N]: per image and class, softmax over the N patches of cos(patch_i, t_k) / tau.

    patches [B, N, D], text [C, D]; differentiable in both.
    """
    if tau <= 0:
        raise ValueError(f"Attention temperature tau_a={tau!r}: use a positive number")
    if patches.shape[-1] != text.shape[-1]:
        raise ValueError(f"Patch width {patches.shape[-1]} and text width {text.shape[-1]} differ")
    cosine = torch.einsum(
        "bnd,cd->bcn", F.normalize(patches, dim=-1), F.normalize(text.to(patches.dtype), dim=-1)
    )
    return (cosine / tau).softmax(dim=-1)


def label_specific_features(patches, text, tau=DEFAULT_TAU):
    """(features [B, C, D], weights [B, C, N]): f_k = sum_i w_ik patch_i, row k aligned with t_k."""
    weights = attention_weights(patches, text, tau)
    return torch.einsum("bcn,bnd->bcd", weights, patches), weights
