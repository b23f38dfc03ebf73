"""MaPLe and CLIP-LoRA: each core equation by hand on small tensors."""
import math
from types import SimpleNamespace

import pytest
import torch
from recording import Recorder

from leclip import catalogue
from leclip.backbone import ImageEncoder, TextEncoder, random_clip
from leclip.lora import apply_lora
from leclip.trainers.clip_lora import LECLIPLoRA
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
    # vision: projected prompts appended before ln_pre (which normalises them too, as
    # released), replaced at blocks 1, 2, then flow on
    shallow = model.shallow_proj(model.prompt_learner.ctx)
    assert vision_rec.seen[-1].shape[1] == 1 + 16 + 2
    assert torch.equal(vision_rec.seen[-1][0, -2:], shallow)
    ln_pre = clip_model.visual.ln_pre
    assert torch.allclose(vision_rec.seen[0][0, -2:], ln_pre(shallow), atol=1e-6)
    assert not torch.allclose(vision_rec.seen[0][0, -2:], shallow, atol=1e-3)
    for j in (1, 2):
        assert torch.allclose(vision_rec.seen[j][1, -2:], model.deep_proj[j - 1](model.deep_text[j - 1]))
    assert vision_rec.seen[3].shape[1] == 19
    # the learnable init is "a photo"; "of a <name>." stays fixed text
    assert model.prompt_learner.n_ctx == 2


def test_maple_prompts_each_tower_to_its_own_depth(capsys):
    # 2 text blocks, 3 vision blocks, depth 9: text prompted at block 1, vision at 1 and 2
    clip_model = random_clip(vision_layers=3, transformer_layers=2, context_length=24)
    model = MaPLeModel(clip_model, ["disc"], 2, "a photo of a", depth=9, logit_scale=1.0)
    assert "PROMPT_DEPTH 9 exceeds the text (2 blocks) and vision (3 blocks)" in capsys.readouterr().out
    assert model.depths == {"text": 2, "vision": 3}
    assert len(model.deep_text) == 2 and len(model.deep_proj) == 2  # what the deeper tower uses
    text_hook, vision_hook = model.hooks()
    assert sorted(text_hook.per_block) == [1] and sorted(vision_hook.per_block) == [-1, 1, 2]
    # text deeper: no projection for the deep prompt only the text tower uses
    clip_model = random_clip(vision_layers=2, transformer_layers=3, context_length=24)
    model = MaPLeModel(clip_model, ["disc"], 2, "a photo of a", depth=3, logit_scale=1.0)
    assert model.depths == {"text": 3, "vision": 2}
    assert len(model.deep_text) == 2 and len(model.deep_proj) == 1


def test_maple_deep_projections_start_as_copies_of_one_layer():
    clip_model = random_clip(vision_layers=4, transformer_layers=4, context_length=24)
    model = MaPLeModel(clip_model, ["disc"], 2, "a photo of a", depth=4, logit_scale=1.0)
    first = model.deep_proj[0]
    assert len(model.deep_proj) == 3
    assert all(torch.equal(p.weight, first.weight) and torch.equal(p.bias, first.bias) for p in model.deep_proj)
    assert all(p.weight is not first.weight for p in model.deep_proj[1:])  # copies, not one shared layer
    assert not torch.equal(model.shallow_proj.weight, first.weight)


def test_maple_ctx_init_only_up_to_four_tokens(capsys):
    clip_model = random_clip(context_length=24)
    model = MaPLeModel(clip_model, ["disc"], 5, "a photo of a", depth=1, logit_scale=1.0)
    assert "N_CTX 5 > 4, so CTX_INIT 'a photo of a' is not used" in capsys.readouterr().out
    x = TextEncoder(clip_model).tokenize(["x"])[0, 1].item()
    assert model.prompt_learner.tokenized_prompts[0, 1:6].tolist() == [x] * 5  # "X X X X X disc."
    assert model.prompt_learner.ctx.std().item() == pytest.approx(0.02, rel=0.5)


def test_maple_depth_below_one_is_an_error():
    with pytest.raises(ValueError, match="TRAINER.MAPLE.PROMPT_DEPTH=0"):
        MaPLeModel(random_clip(context_length=24), ["disc"], 2, "a photo of a", depth=0, logit_scale=1.0)


@pytest.fixture
def lora_clip():
    return random_clip(seed=5).requires_grad_(False)


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
        apply_lora(lora_clip, params=["q", "out"])


LORA_CONFIG = "configs/trainers/LECLIPLoRA/synth.yaml"


# None: the key's default (a Dassl fork's cfg without our YAML)
@pytest.mark.parametrize("template,used", [(None, "a photo of a {}."), ("", "a {} shape."), ("one {}", "one {}")])
def test_lora_prompt_is_the_released_template_or_the_datasets(template, used):
    opts = ["DATASET.PROMPT_TEMPLATE", "a {} shape."] + ([] if template is None else ["TRAINER.CLIP_LORA.TEMPLATE", template])
    trainer = SimpleNamespace(
        cfg=catalogue.setup_cfg(opts=opts), classnames=["red_disc", "ring"], device="cpu",
        load_clip=lambda: random_clip(seed=5), logit_scale=100.0, setup_optimization=lambda name, module: None,
    )
    LECLIPLoRA.build_model(trainer)
    expected = TextEncoder(trainer.clip_model).tokenize([used.format("red disc"), used.format("ring")])
    assert torch.equal(trainer.model.tokens, expected)


def test_lora_template_without_a_slot_is_named(run_trainer):
    with pytest.raises(ValueError, match="TEMPLATE='a photo' has no"):
        run_trainer("LECLIPLoRA", LORA_CONFIG, ["TRAINER.CLIP_LORA.TEMPLATE", "a photo"])
