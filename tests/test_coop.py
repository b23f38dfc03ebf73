"""CoOp and zero-shot CLIP against their reference equations on a small random CLIP."""
import pytest
import torch
import torch.nn.functional as F

from leclip.backbone import PromptLearner, class_text_features, random_clip
from leclip.trainers.coop import PromptedCLIP

CLASSES = ["crimson disc", "navy square", "olive ring"]


def reference_text_features(clip_model, embeds, tokens):
    """CLIP's text tower on given token embeddings, written out from the paper."""
    x = embeds + clip_model.positional_embedding
    x = clip_model.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
    x = clip_model.ln_final(x)
    return x[torch.arange(len(tokens)), tokens.argmax(-1)] @ clip_model.text_projection


@pytest.fixture(scope="module")
def clip_model():
    return random_clip(context_length=24, seed=3)


def test_coop_logits_match_the_reference_equation(clip_model):
    torch.manual_seed(0)
    learner = PromptLearner(clip_model, CLASSES, n_ctx=4)
    model = PromptedCLIP(clip_model, learner, clip_model.logit_scale.exp().item())
    images = torch.randn(5, 3, 32, 32)

    # prompt t_k = [SOS, v_1..v_M, CLASS_k, ".", EOS]; logit = s * cos(f(x), g(t_k))
    tokens = learner.tokenized_prompts
    embeds = clip_model.token_embedding(tokens).clone()
    embeds[:, 1:5] = learner.ctx.detach()
    text = F.normalize(reference_text_features(clip_model, embeds, tokens), dim=-1)
    image = F.normalize(clip_model.encode_image(images), dim=-1)
    expected = clip_model.logit_scale.exp() * image @ text.t()

    assert torch.allclose(model(images, model.encode_classes())["logits"], expected, atol=1e-5)


def test_coop_initialised_from_the_template_equals_zero_shot(clip_model):
    learner = PromptLearner(clip_model, CLASSES, ctx_init="a photo of a")
    model = PromptedCLIP(clip_model, learner, clip_model.logit_scale.exp().item())
    zero_shot = class_text_features(clip_model, CLASSES, "a photo of a {}.")
    assert torch.allclose(model.encode_classes(), zero_shot, atol=1e-6)


def test_only_the_context_receives_gradients(clip_model):
    learner = PromptLearner(clip_model, CLASSES, n_ctx=4)
    model = PromptedCLIP(clip_model, learner, clip_model.logit_scale.exp().item())
    clip_model.requires_grad_(False)
    model(torch.randn(2, 3, 32, 32), model.encode_classes())["logits"].sum().backward()
    assert learner.ctx.grad is not None and learner.ctx.grad.abs().sum() > 0
    assert all(p.grad is None for p in clip_model.parameters())


@pytest.mark.parametrize("position", ["middle", "front"])
def test_class_token_position(clip_model, position):
    learner = PromptLearner(clip_model, CLASSES, n_ctx=4, class_token_position=position)
    embeds, _ = learner()
    name_embed = clip_model.token_embedding(learner.tokenized_prompts)[0, 5 : 5 + learner.name_lens[0]]
    start = 1 + (2 if position == "middle" else 0)
    assert torch.equal(embeds[0, start : start + learner.name_lens[0]], name_embed)
    ctx_start = start + learner.name_lens[0]
    ctx_slice = learner.ctx[2:] if position == "middle" else learner.ctx
    assert torch.equal(embeds[0, ctx_start : ctx_start + len(ctx_slice)], ctx_slice)


def test_too_many_context_tokens_is_a_clear_error(clip_model):
    with pytest.raises(ValueError, match="lower N_CTX"):
        PromptLearner(clip_model, CLASSES, n_ctx=40)


@pytest.mark.parametrize("trainer,node", [("LECoOp", "COOP"), ("LELoCoOp", "LOCOOP"), ("LEPLOT", "PLOT")])
def test_csc_from_init_is_read_by_each_trainer(run_trainer, trainer, node):
    with pytest.raises(ValueError, match="CSC_FROM_INIT True with CSC=False"):
        run_trainer(trainer, f"configs/trainers/{trainer}/synth.yaml", [f"TRAINER.{node}.CSC_FROM_INIT", "True"])
