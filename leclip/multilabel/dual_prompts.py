"""Positive/negative prompt logits (DualCoOp style), on global or label-specific features.

Each class has a positive and a negative prompt (learnable context shared across classes;
`PromptLearner(..., n_sets=2)` encodes both sets); the class logit is the difference of
the two similarities, logit_k = scale * (cos(f, t_k^+) - cos(f, t_k^-)) -- the rule of docs/METHODS.md (CSA),
and sigmoid of it is DualCoOp's softmax over the (negative, positive) pair. The trainer
passes CLIP's logit scale (as DualCoOp does).
Ours: context set 0 is the positive prompt, set 1 the negative one; with label-specific
features, f_k is pooled with the positive prompt's feature t_k^+ and scored against both
prompts (`pool_negatives=False`): one feature per class, as the paper's one-to-one
alignment, so the logit compares two prompts on the same evidence. `pool_negatives=True`
pools a second feature with t_k^- for the negative similarity (DualCoOp's per-prompt
aggregation over regions).
"""
import torch.nn.functional as F

from .label_features import DEFAULT_TAU, label_specific_features


def split_dual(text_features):
    """[2C, D] text features of `PromptLearner(n_sets=2)` -> (positive [C, D], negative [C, D])."""
    if text_features.shape[0] % 2:
        raise ValueError(
            f"{text_features.shape[0]} prompt features: positive/negative prompts need an even number (n_sets=2)"
        )
    positive, negative = text_features.chunk(2, dim=0)  # (ours) set 0 positive, set 1 negative
    return positive, negative


def class_cosine(features, text):
    """Cosine of a global feature [B, D] with every t_k, or of each f_k [B, C, D] with its own t_k -> [B, C]."""
    features = F.normalize(features, dim=-1)
    text = F.normalize(text.to(features.dtype), dim=-1)
    if features.dim() == 2:
        return features @ text.t()
    if features.dim() == 3 and features.shape[1] == text.shape[0]:
        return (features * text).sum(dim=-1)
    raise ValueError(
        f"Image features {tuple(features.shape)}: use [B, D] or [B, C, D] with C = {text.shape[0]} classes"
    )


def dual_logits(features, positive_text, negative_text, scale):
    """[B, C] logits scale * (cos(f, t^+) - cos(f, t^-)); features [B, D] or [B, C, D]."""
    return scale * (class_cosine(features, positive_text) - class_cosine(features, negative_text))


def label_specific_dual_logits(patches, positive_text, negative_text, scale, tau=DEFAULT_TAU, pool_negatives=False):
    """(logits [B, C], label-specific features [B, C, D], their weights [B, C, N]) from patches [B, N, D].

    The returned features and weights are those pooled with the positive prompts.
    """
    features, weights = label_specific_features(patches, positive_text, tau)
    negative_features = label_specific_features(patches, negative_text, tau)[0] if pool_negatives else features
    logits = scale * (class_cosine(features, positive_text) - class_cosine(negative_features, negative_text))
    return logits, features, weights
