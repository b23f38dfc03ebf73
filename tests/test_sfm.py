"""The semantic filtering module on small hand-made inputs: defaults, the top-k bound,
per-image normalisation and dtypes (the pooling itself is checked in test_cfsg.py)."""
import math

import pytest
import torch

from leclip.sfm import SemanticFilter


def test_defaults_keep_10_patches_weighted_visually():
    torch.manual_seed(0)
    patches, global_feature, class_text = torch.randn(2, 12, 4), torch.randn(2, 4), torch.randn(2, 4)
    pooled, indices, weights = SemanticFilter()(patches, global_feature, class_text)
    assert indices.shape == (2, 10)
    explicit = SemanticFilter(top_k=10, weighting="visual")(patches, global_feature, class_text)
    assert torch.equal(pooled, explicit[0]) and torch.equal(weights, explicit[2])
    assert not torch.allclose(weights, torch.full_like(weights, 0.1))  # visual, not uniform


def test_top_k_must_be_a_positive_integer_and_at_most_the_patch_count():
    for bad in (0, -1, 2.5):
        with pytest.raises(ValueError, match="top_k"):
            SemanticFilter(top_k=bad)
    patches = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])
    # k = N keeps every patch
    pooled, indices, weights = SemanticFilter(top_k=2, weighting="textual")(
        patches, torch.tensor([[1.0, 1.0]]), torch.tensor([[1.0, 0.0]])
    )
    assert indices.tolist() == [[0, 1]]
    assert torch.allclose(pooled, torch.tensor([[0.5, 1.0]]))
    with pytest.raises(ValueError, match="top_k=3"):
        SemanticFilter(top_k=3)(patches, torch.tensor([[1.0, 1.0]]), torch.tensor([[1.0, 0.0]]))


def test_each_image_global_feature_is_normalised_on_its_own():
    patches = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]] * 2)
    global_feature = torch.tensor([[1.0, 1.0], [2.0, 0.0]])
    class_text = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    _, indices, weights = SemanticFilter(top_k=2)(patches, global_feature, class_text)
    assert indices.tolist() == [[0, 1], [0, 1]]
    # image 0: cos (1/sqrt 2, 1/sqrt 2) -> (1/2, 1/2); image 1: cos (1, 0) -> softmax(1, 0)
    w = math.e / (math.e + 1)
    assert torch.allclose(weights, torch.tensor([[0.5, 0.5], [w, 1 - w]]))


@pytest.mark.parametrize("weighting", ["visual", "textual"])
def test_fp32_text_and_global_features_meet_fp64_patches(weighting):
    patches = torch.tensor([[[3.0, 0.0], [0.0, 1.0], [1.0, 1.0]]], dtype=torch.float64)
    global_feature, class_text = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    pooled, indices, weights = SemanticFilter(top_k=2, weighting=weighting)(patches, global_feature, class_text)
    assert indices.tolist() == [[1, 2]]  # cos with t: 1 and 1/sqrt 2
    assert pooled.dtype == weights.dtype == torch.float64
    if weighting == "visual":  # cos with g: 0 and 1/sqrt 2
        expected = torch.softmax(torch.tensor([0.0, 1 / math.sqrt(2)], dtype=torch.float64), 0)
    else:
        expected = torch.tensor([0.5, 0.5], dtype=torch.float64)
    assert torch.allclose(weights[0], expected)
    assert torch.allclose(pooled[0], expected[0] * patches[0, 1] + expected[1] * patches[0, 2])
