"""Sinkhorn's released defaults and strict stopping rule, on slowly converging plans
(the plans themselves are checked in test_plot.py)."""
import math

import torch

from leclip.ot import ot_similarity, sinkhorn

UNIFORM = torch.full((1, 2), 0.5)
# no doubly stochastic scaling of [[1, 1], [0, 1]] exists: the iterates keep moving
SLOW = torch.tensor([[[1.0, 1.0], [0.0, 1.0]]])


def test_sinkhorn_runs_at_most_100_iterations_by_default():
    plan = sinkhorn(SLOW, UNIFORM, UNIFORM, thresh=0.0)
    assert torch.equal(plan, sinkhorn(SLOW, UNIFORM, UNIFORM, max_iter=100, thresh=0.0))
    assert (plan - sinkhorn(SLOW, UNIFORM, UNIFORM, max_iter=101, thresh=0.0)).abs().max() > 1e-6


def unit(degrees):
    return [math.cos(math.radians(degrees)), math.sin(math.radians(degrees))]


def test_ot_similarity_runs_at_most_100_iterations_by_default():
    # patch 0 halfway between the two prompts, patch 1 on prompt 1: a nearly degenerate kernel
    local = torch.tensor([[unit(0), unit(45)]])
    prompts = torch.tensor([[unit(-45)], [unit(45)]])  # N = 2 sets, C = 1
    out = ot_similarity(local, prompts, thresh=0.0)
    assert torch.equal(out, ot_similarity(local, prompts, max_iter=100, thresh=0.0))
    assert (out - ot_similarity(local, prompts, max_iter=101, thresh=0.0)).abs().max() > 1e-6


def test_a_change_equal_to_the_threshold_does_not_stop():
    kernel = torch.tensor([[[1.0, 0.5], [0.25, 1.0]]])
    # the first change of r from 1, r = u / (K 1) = (1/3, 2/5), by the same fp32 operations
    thresh = (UNIFORM / kernel.sum(dim=-1) - 1).abs().mean().item()
    plan = sinkhorn(kernel, UNIFORM, UNIFORM, thresh=thresh)
    assert torch.equal(plan, sinkhorn(kernel, UNIFORM, UNIFORM, max_iter=2, thresh=0.0))
    assert not torch.allclose(plan, sinkhorn(kernel, UNIFORM, UNIFORM, max_iter=1))
