"""Entropic optimal transport (Sinkhorn) for PLOT.

Chen et al., "PLOT: Prompt Learning with Optimal Transport for Vision-Language Models"
(ICLR 2023), as released (github.com/CHENGY12/PLOT): cost = 1 - cosine between M local
image features and N prompt features, uniform marginals, kernel exp(-cost / eps),
at most `max_iter` scaling iterations, the plan computed without gradients.
"""
import torch
import torch.nn.functional as F


def sinkhorn(kernel, u, v, max_iter=100, thresh=1e-2):
    """Transport plans [P, M, N] with row sums u [P, M] and column sums v [P, N].

    Released stopping rule: after each iteration, stop once the mean absolute change
    of the row scaling, taken over all P problems at once, is below `thresh`.
    """
    r, c = torch.ones_like(u), torch.ones_like(v)
    for _ in range(max_iter):
        previous = r
        r = u / (kernel @ c.unsqueeze(-1)).squeeze(-1)
        c = v / (kernel.transpose(1, 2) @ r.unsqueeze(-1)).squeeze(-1)
        if (r - previous).abs().mean() < thresh:
            break
    return r.unsqueeze(-1) * kernel * c.unsqueeze(-2)


def ot_similarity(local_features, prompt_features, eps=0.1, max_iter=100, thresh=1e-2):
    """PLOT's image-class similarity: sum over the transport plan of plan * cosine.

    local_features [B, M, D]; prompt_features [N, C, D] (N prompt sets). Returns [B, C];
    gradients flow through the cosines only. Runs in fp32 even under AMP: exp(-cost/eps)
    reaches exp(-20), below fp16's range, and an all-zero kernel row gives NaN plans.
    """
    with torch.autocast(local_features.device.type, enabled=False):
        local = F.normalize(local_features.float(), dim=-1)
        prompts = F.normalize(prompt_features.float(), dim=-1)
        batch, m, _ = local.shape
        n, classes, _ = prompts.shape
        sim = torch.einsum("bmd,ncd->bcmn", local, prompts).reshape(batch * classes, m, n)
        with torch.no_grad():
            kernel = torch.exp(-(1.0 - sim) / eps)
            u = sim.new_full((batch * classes, m), 1.0 / m)
            v = sim.new_full((batch * classes, n), 1.0 / n)
            plan = sinkhorn(kernel, u, v, max_iter, thresh)
        return (plan * sim).sum(dim=(1, 2)).view(batch, classes)
