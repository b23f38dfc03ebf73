"""PLOT against hand computations: Sinkhorn plans, marginals and the released stopping
rule, the transport-weighted logit, the N prompt sets; and a run that learns."""
import pytest
import torch
import torch.nn.functional as F

from leclip.backbone import ImageEncoder, PromptLearner, random_clip
from leclip.ot import ot_similarity, sinkhorn
from leclip.trainers.plot import PLOTModel

CONFIG = "configs/trainers/LEPLOT/synth.yaml"


def uniform(p, m):
    return torch.full((p, m), 1.0 / m)


def test_one_sinkhorn_iteration_by_hand():
    kernel = torch.tensor([[[1.0, 0.5], [0.25, 1.0]]])
    # r = u / (K 1) = (1/3, 2/5); c = v / (K^T r) = (15/13, 15/17); plan = r_i K_ij c_j
    expected = torch.tensor([[[5 / 13, 5 / 34], [3 / 26, 6 / 17]]])
    assert torch.allclose(sinkhorn(kernel, uniform(1, 2), uniform(1, 2), max_iter=1), expected)


def test_converged_plan_has_the_marginals_and_the_scaling_form():
    torch.manual_seed(0)
    kernel = torch.rand(2, 5, 3) + 0.1
    u, v = torch.softmax(torch.randn(2, 5), -1), uniform(2, 3)
    plan = sinkhorn(kernel, u, v, max_iter=1000, thresh=1e-9)
    assert torch.allclose(plan.sum(dim=2), u, atol=1e-5)
    assert torch.allclose(plan.sum(dim=1), v, atol=1e-5)
    # plan = diag(r) K diag(c): log(plan / K) is a row term plus a column term
    log_ratio = (plan / kernel).log()
    additive = log_ratio[:, :, :1] + log_ratio[:, :1, :] - log_ratio[:, :1, :1]
    assert torch.allclose(log_ratio, additive, atol=1e-4)


COS = torch.tensor([[[0.75, 0.95, 0.8], [1.0, 0.7, 0.85], [0.9, 0.9, 0.7], [0.8, 0.75, 1.0]]])
KERNEL = torch.exp(-(1 - COS) / 0.06)


def test_released_stopping_rule():
    u, v = uniform(1, 4), uniform(1, 3)
    # mean |r_t - r_(t-1)| by iteration: 0.59, 0.031, 0.023, 0.016, 0.011, 0.0076: below 1e-2 at t = 6
    plan = sinkhorn(KERNEL, u, v)
    assert torch.allclose(plan, sinkhorn(KERNEL, u, v, max_iter=6, thresh=0.0))
    assert not torch.allclose(plan, sinkhorn(KERNEL, u, v, max_iter=5, thresh=0.0))
    # the mean runs over the whole batch: next to a uniform kernel (change 0 from t = 2)
    # the mean halves and drops below 1e-2 at t = 4
    batch = sinkhorn(torch.cat([KERNEL, torch.ones(1, 4, 3)]), uniform(2, 4), uniform(2, 3))
    assert torch.allclose(batch[:1], sinkhorn(KERNEL, u, v, max_iter=4, thresh=0.0))
    # at most max_iter iterations
    assert torch.allclose(sinkhorn(KERNEL, u, v, max_iter=2), sinkhorn(KERNEL, u, v, max_iter=2, thresh=0.0))


def test_transport_weighted_logit_by_hand():
    torch.manual_seed(1)
    local, prompts = torch.randn(2, 4, 8), torch.randn(3, 5, 8)  # B 2, M 4 patches, N 3 sets, C 5
    # converged, so each (image, class) plan is its own: the released rule stops on the batch mean
    out = ot_similarity(local, prompts, eps=0.1, max_iter=5000, thresh=1e-12)
    assert out.shape == (2, 5)
    for b, c in [(0, 0), (1, 2), (1, 4)]:
        cos = F.normalize(local[b], dim=-1) @ F.normalize(prompts[:, c], dim=-1).t()  # [M, N]
        plan = sinkhorn(torch.exp(-(1 - cos) / 0.1)[None], uniform(1, 4), uniform(1, 3), 5000, 1e-12)[0]
        assert torch.allclose(plan.sum(dim=1), torch.full((4,), 1 / 4), atol=1e-5)
        assert out[b, c].item() == pytest.approx((plan * cos).sum().item(), rel=1e-5)


def test_large_eps_gives_the_mean_cosine():
    torch.manual_seed(2)
    local, prompts = torch.randn(1, 6, 8), torch.randn(2, 3, 8)
    cos = torch.einsum("md,ncd->cmn", F.normalize(local[0], dim=-1), F.normalize(prompts, dim=-1))
    out = ot_similarity(local, prompts, eps=1e4)
    assert torch.allclose(out[0], cos.mean(dim=(1, 2)), atol=1e-4)


def test_gradient_flows_through_the_cosines_only():
    torch.manual_seed(3)
    local = torch.randn(2, 4, 8)
    prompts = torch.randn(3, 2, 8, requires_grad=True)
    ot_similarity(local, prompts).sum().backward()
    grad = prompts.grad.clone()
    prompts.grad = None
    with torch.no_grad():
        cos = torch.einsum("bmd,ncd->bcmn", F.normalize(local, dim=-1), F.normalize(prompts, dim=-1))
        plan = sinkhorn(torch.exp(-(1 - cos) / 0.1).reshape(4, 4, 3), uniform(4, 4), uniform(4, 3)).view(2, 2, 4, 3)
    cos = torch.einsum("bmd,ncd->bcmn", F.normalize(local, dim=-1), F.normalize(prompts, dim=-1))
    (plan * cos).sum().backward()
    assert torch.allclose(grad, prompts.grad, atol=1e-6)


def test_transport_runs_in_fp32_under_autocast():
    torch.manual_seed(4)
    local, prompts = torch.randn(2, 4, 8), torch.randn(3, 5, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = ot_similarity(local, prompts)
    assert out.dtype == torch.float32
    assert torch.allclose(out, ot_similarity(local, prompts))


def test_plot_model_uses_n_set_major_prompt_sets():
    clip_model = random_clip(context_length=24, seed=7)
    learner = PromptLearner(clip_model, ["disc", "ring", "square"], n_ctx=4, n_sets=2)
    model = PLOTModel(clip_model, learner, clip_model.logit_scale.exp().item())
    images = torch.randn(2, 3, 32, 32)
    # set s, class c: "SOS ctx[s] <name> . EOS" through CLIP's text tower
    tokens = learner.tokenized_prompts[:3]
    features = []
    for ctx in learner.ctx.detach():
        embeds = clip_model.token_embedding(tokens).clone()
        embeds[:, 1:5] = ctx
        x = clip_model.transformer((embeds + clip_model.positional_embedding).permute(1, 0, 2)).permute(1, 0, 2)
        x = clip_model.ln_final(x)
        features.append(x[torch.arange(3), tokens.argmax(-1)] @ clip_model.text_projection)
    text = torch.stack(features)  # [N 2, C 3, D]
    assert not torch.allclose(text[0], text[1])
    _, patches = ImageEncoder(clip_model)(images)
    expected = clip_model.logit_scale.exp() * ot_similarity(patches, text)
    assert torch.allclose(model(images, model.encode_classes())["logits"], expected, atol=1e-4)


@pytest.mark.parametrize(
    "opts,message",
    [
        (["TRAINER.PLOT.CTX_INIT", "a photo of a"], "CTX_INIT='a photo of a' starts all 4 prompt sets"),
        (["TRAINER.PLOT.N", "0"], "N=0, MAX_ITER=100, EPS=0.1"),
    ],
)
def test_bad_plot_config_is_named(run_trainer, opts, message):
    with pytest.raises(ValueError, match=message):
        run_trainer("LEPLOT", CONFIG, opts)
