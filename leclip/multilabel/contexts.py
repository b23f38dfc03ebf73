"""Contexts of a multi-label dataset: classes grouped by how often they co-occur (CSA).

From the paper: the label correlation of the labeled set is partitioned into contexts by
spectral clustering; an auxiliary head learns to identify an image's contexts on labeled
and unlabeled images. As docs/METHODS.md (CSA) states it: sklearn's spectral clustering on a precomputed
affinity, `n_contexts` contexts (default 8 in the trainer); an image's context target is
the multi-hot of the contexts of its (pseudo-)positive labels; the head is trained with
BCE (weight 0.5, in the trainer).
Ours: the correlation is the cosine between class columns (co-count / sqrt(count_i *
count_j)); a class without labeled positives has no co-occurrence evidence, so it is left
out of the clustering and gets context NO_CONTEXT (-1), which no context target counts
(with class-wise thresholds it has no pseudo-positives either); a soft label counts
towards its context as its largest label (max over the context's classes); the BCE sums
over contexts and averages over images, the reduction of the ASL. Two heads:
`LabelContextHead` reads the label-specific features that make the class scores (one
weight vector per context and class, on each L2-normalised f_k), so its loss shapes them;
`ContextHead` is one linear layer on an L2-normalised global feature. `narrow_scores` is
Figure 1's "narrow down the label space": each class score times the posterior of its
context.
"""
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

NO_CONTEXT = -1  # (ours) context of a class without labeled positives


def cooccurrence(labels):
    """[C, C] cosine between the multi-hot columns of `labels` [N, C]; a class without
    positives has affinity 0 to every other class and 1 to itself."""
    y = np.asarray(labels, dtype=np.float64)
    counts = y.sum(axis=0)
    co = y.T @ y
    norm = np.sqrt(np.outer(counts, counts))
    affinity = np.divide(co, norm, out=np.zeros_like(co), where=norm > 0)
    np.fill_diagonal(affinity, 1.0)
    return affinity


def classes_without_positives(labels):
    """Indices of the classes with no positive in `labels` [N, C] (to report)."""
    return np.flatnonzero(np.asarray(labels).sum(axis=0) == 0)


def cluster_classes(labels, n_contexts, seed=0):
    """[C] context index of each class: spectral clustering of the co-occurrence of the
    classes with labeled positives; the others get NO_CONTEXT."""
    from sklearn.cluster import SpectralClustering

    affinity = cooccurrence(labels)
    num_classes = affinity.shape[0]
    if not 1 <= n_contexts <= num_classes:
        raise ValueError(f"{n_contexts} contexts for {num_classes} classes: use 1..{num_classes}")
    unseen = classes_without_positives(labels)
    seen = np.setdiff1d(np.arange(num_classes), unseen)
    if n_contexts > len(seen):
        raise ValueError(
            f"{n_contexts} contexts, but only {len(seen)} of {num_classes} classes have labeled positives "
            f"(none for classes {unseen.tolist()}): use at most {len(seen)} contexts or label more images"
        )
    contexts = np.full(num_classes, NO_CONTEXT, dtype=np.int64)
    if n_contexts == 1:
        contexts[seen] = 0
        return contexts
    model = SpectralClustering(n_clusters=n_contexts, affinity="precomputed", random_state=seed, assign_labels="kmeans")
    contexts[seen] = model.fit_predict(affinity[np.ix_(seen, seen)])
    return contexts


def context_membership(class_context, n_contexts):
    """[C, K] one-hot of each class's context (a zero row for NO_CONTEXT)."""
    class_context = torch.as_tensor(class_context, dtype=torch.long)
    if class_context.numel() and (class_context.max() >= n_contexts or class_context.min() < NO_CONTEXT):
        raise ValueError(f"Context indices must lie in {NO_CONTEXT}..{n_contexts - 1}")
    membership = torch.zeros(len(class_context), n_contexts)
    member = class_context != NO_CONTEXT
    membership[member.nonzero().squeeze(-1), class_context[member]] = 1.0
    return membership


def context_targets(labels, class_context, n_contexts):
    """[B, K] context target of each image: context j scores the largest (pseudo-)label
    of its classes, so hard labels give the multi-hot of the contexts of the positives."""
    if not labels.is_floating_point():
        labels = labels.float()
    membership = context_membership(class_context, n_contexts).to(device=labels.device, dtype=labels.dtype)
    if membership.shape[0] != labels.shape[1]:
        raise ValueError(f"{membership.shape[0]} class contexts for labels of {labels.shape[1]} classes")
    return (labels.unsqueeze(-1) * membership).amax(dim=1)


class ContextHead(nn.Module):
    """Context logits [B, K] from an image feature [B, D]: a linear layer on the
    L2-normalised feature (ours: the same scale on every backbone)."""

    def __init__(self, feature_dim, n_contexts):
        super().__init__()
        self.linear = nn.Linear(feature_dim, n_contexts)

    def forward(self, features):
        return self.linear(F.normalize(features.to(self.linear.weight.dtype), dim=-1))


class LabelContextHead(nn.Module):
    """Context logits [B, K] from label-specific features [B, C, D]:
    logit_j = b_j + sum_k <W_jk, f_k / |f_k|> (ours: a class's feature speaks for a
    context through its own weights; W starts at 0, so every context starts at sigmoid(b_j))."""

    def __init__(self, num_classes, feature_dim, n_contexts):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(n_contexts, num_classes, feature_dim))
        self.bias = nn.Parameter(torch.zeros(n_contexts))

    def forward(self, features):
        if features.dim() != 3 or features.shape[1:] != self.weight.shape[1:]:
            raise ValueError(
                f"Label-specific features {tuple(features.shape)}: use [B, {self.weight.shape[1]}, "
                f"{self.weight.shape[2]}] (one feature per class)"
            )
        features = F.normalize(features.to(self.weight.dtype), dim=-1)
        return torch.einsum("bcd,kcd->bk", features, self.weight) + self.bias


def narrow_scores(scores, context_logits, class_context):
    """Class scores [B, C] (probabilities) times the posterior sigmoid(context logit) of
    each class's context [B, K]; a class without a context (NO_CONTEXT) keeps its score."""
    class_context = torch.as_tensor(class_context, dtype=torch.long, device=scores.device)
    posterior = context_logits.float().sigmoid()[:, class_context.clamp_min(0)]
    return torch.where(class_context == NO_CONTEXT, scores, scores * posterior.to(scores.dtype))


def context_accuracy(logits, targets):
    """(element accuracy, exact-match accuracy) in percent of the context decisions
    sigmoid(logit) >= 0.5 against the context targets [B, K] (hard)."""
    hits = (logits >= 0) == (targets > 0.5)
    return 100.0 * hits.float().mean().item(), 100.0 * hits.all(dim=-1).float().mean().item()


def context_loss(logits, targets, weight=None):
    """BCE of context logits [B, K] against targets [B, K], summed over contexts, averaged
    over the B images; `weight` [B] (or [B, 1]) masks or weights images."""
    loss = F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), reduction="none").sum(dim=-1)
    if weight is not None:
        loss = loss * weight.reshape(-1).to(loss.dtype)
    return loss.mean()
