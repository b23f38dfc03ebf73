"""Contexts of a multi-label dataset: classes grouped by how often they co-occur (CSA).

The label co-occurrence of the labeled images, as the cosine between class columns
(co-count / sqrt(count_i * count_j), ours), is the affinity of a spectral clustering
(sklearn, precomputed affinity) into `n_contexts` contexts of classes.
"""
import numpy as np


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


def cluster_classes(labels, n_contexts, seed=0):
    """[C] context index of each class: spectral clustering of the co-occurrence."""
    from sklearn.cluster import SpectralClustering

    affinity = cooccurrence(labels)
    if not 1 <= n_contexts <= affinity.shape[0]:
        raise ValueError(f"{n_contexts} contexts for {affinity.shape[0]} classes: use 1..{affinity.shape[0]}")
    if n_contexts == 1:
        return np.zeros(affinity.shape[0], dtype=np.int64)
    model = SpectralClustering(n_clusters=n_contexts, affinity="precomputed", random_state=seed, assign_labels="kmeans")
    return model.fit_predict(affinity).astype(np.int64)
