"""MaPLe and CLIP-LoRA: each core equation by hand on small tensors."""
import math

import pytest
import torch
from recording import Recorder

from leclip.backbone import ImageEncoder, TextEncoder, random_clip
from leclip.lora import apply_lora
from leclip.trainers.maple import MaPLeModel


def test_maple_prompts_per_depth_on_both_towers():
    clip_model = random_clip(vision_layers=4, transformer_layers=4, context_length=24, seed=4)
    model = MaPLeModel(clip_model, ["red disc", "blue ring"], n_ctx=2, ctx_init="a photo of a", depth=3, logit_scale=1.0)
    text_hook, vision_hook = model.hooks()
    text_rec, vision_rec = Recorder(text_hook), Recorder(vision_hook)
    prompts, tokens = model.prompt_learner()
    TextEncoder(clip_model)(prompts, tokens, token_hook=text_rec)
    ImageEncoder(clip_model)(torch.randn(2, 3, 32, 32), token_hook=vision_rec, patches=False)
    # text: learnable ctx at block 0, the deep prompts replace positions 1..2 in blocks 1, 2
    position = clip_model.positional_embedding[1:3]
    assert torch.allclose(text_rec.seen[0][0, 1:3], model.prompt_learner.ctx + position)
    for j in (1, 2):
        assert torch.equal(text_rec.seen[j][1, 1:3], model.deep_text[j - 1])
    assert not torch.equal(text_rec.seen[3][0, 1:3], model.deep_text[1])  # flows on after the depth
    # vision: projected prompts appended at block 0, replaced at blocks 1, 2, then flow on
    shallow = model.shallow_proj(model.prompt_learner.ctx)
    assert vision_rec.seen[0].shape[1] == 1 + 16 + 2
    assert torch.allclose(vision_rec.seen[0][0, -2:], shallow)
    for j in (1, 2):
        assert torch.allclose(vision_rec.seen[j][1, -2:], model.deep_proj[j - 1](model.deep_text[j - 1]))
    assert vision_rec.seen[3].shape[1] == 19
    # the learnable init is "a photo"; "of a <name>." stays fixed text
    assert model.prompt_learner.n_ctx == 2


def test_maple_depth_is_clipped_to_the_model():
    clip_model = random_clip(vision_layers=2, transformer_layers=2, context_length=24)
    assert MaPLeModel(clip_model, ["disc"], 2, "a photo of a", depth=9, logit_scale=1.0).depth == 2


@pytest.fixture
def lora_clip():
    clip_model = random_clip(seed=5)
    for p in clip_model.parameters():
        p.requires_grad_(False)
    return clip_model


def test_lora_at_initialisation_is_exactly_the_frozen_model(lora_clip):
    images = torch.randn(2, 3, 32, 32)
    tokens = TextEncoder(lora_clip).tokenize(["a red disc", "a blue ring"])
    before = lora_clip.encode_image(images), lora_clip.encode_text(tokens)
    loras = apply_lora(lora_clip, r=2, alpha=1, dropout=0.25)
    lora_clip.eval()
    assert len(loras) == 4  # 2 vision + 2 text blocks
    assert torch.allclose(lora_clip.encode_image(images), before[0], atol=1e-6)
    assert torch.allclose(lora_clip.encode_text(tokens), before[1], atol=1e-6)
    lora = loras[0]
    assert lora.scaling == pytest.approx(1 / math.sqrt(2))
    assert all(torch.count_nonzero(b) == 0 for b in lora.B.values())
    assert all(torch.count_nonzero(a) > 0 for a in lora.A.values())


def test_a_lora_step_changes_only_lora_parameters(lora_clip):
    loras = apply_lora(lora_clip, r=2, alpha=1, dropout=0.0)
    frozen = {k: v.clone() for k, v in lora_clip.state_dict().items() if "lora" not in k}
    optim = torch.optim.SGD(loras.parameters(), lr=0.5)
    images = torch.randn(2, 3, 32, 32)
    before = lora_clip.encode_image(images).detach()
    for _ in range(2):  # B moves at the first step, the output at the second
        optim.zero_grad()
        lora_clip.encode_image(images).pow(2).sum().backward()
        optim.step()
    after = lora_clip.state_dict()
    assert all(torch.equal(frozen[k], after[k]) for k in frozen)
    assert any(torch.count_nonzero(b) > 0 for lora in loras for b in lora.B.values())
    assert not torch.allclose(lora_clip.encode_image(images), before)


def test_lora_rejects_unknown_projections(lora_clip):
    with pytest.raises(ValueError, match="subset of"):
        apply_lora(lora_clip, params=["q", "o"])
