"""The CLIP layer: loading, encoders, token hooks."""
import pytest
import torch
from recording import Recorder

from leclip.backbone import (
    DeepTokens,
    ImageEncoder,
    MissingWeightsError,
    ReplaceAt,
    TextEncoder,
    autocast,
    build_clip,
    load_clip,
    random_clip,
    save_clip,
)


@pytest.fixture(scope="module")
def clip_model():
    return random_clip(vision_width=64, vision_layers=3, seed=1)


def test_missing_official_weights_name_file_folder_and_source(tmp_path, monkeypatch):
    monkeypatch.setenv("LECLIP_CLIP_CACHE", str(tmp_path))
    with pytest.raises(MissingWeightsError) as err:
        load_clip("ViT-B/16")
    message = str(err.value)
    assert "ViT-B-16.pt" in message and str(tmp_path) in message and "openaipublic" in message


def test_unknown_backbone_lists_valid_names():
    with pytest.raises(KeyError, match="valid names: .*ViT-B/16.*synth-vit"):
        load_clip("ViT-Z/99")


def test_missing_path_is_named(tmp_path):
    with pytest.raises(MissingWeightsError, match="nope.pt"):
        load_clip("ViT-B/16", path=str(tmp_path / "nope.pt"))


def test_save_load_round_trip_keeps_heads_and_fp32(tmp_path):
    model = random_clip(vision_width=96, vision_heads=3, transformer_width=32, transformer_heads=4, seed=2)
    save_clip(model, tmp_path / "m.pt")
    loaded = load_clip("any", path=str(tmp_path / "m.pt"))
    assert loaded.visual.transformer.resblocks[0].attn.num_heads == 3
    assert loaded.transformer.resblocks[0].attn.num_heads == 4
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    images = torch.randn(2, 3, 32, 32)
    # weights are stored in fp16, so equal up to fp16 rounding
    assert torch.allclose(model.encode_image(images), loaded.encode_image(images), atol=5e-3)


def test_build_from_a_state_dict_reads_widths_from_the_weights(clip_model):
    rebuilt = build_clip(clip_model.state_dict(), {"vision_heads": 1, "text_heads": 2})
    assert rebuilt.context_length == clip_model.context_length == 16
    tokens = TextEncoder(rebuilt).tokenize(["a red disc"])
    assert torch.allclose(rebuilt.encode_text(tokens), clip_model.encode_text(tokens))


def test_image_encoder_matches_clip_and_projects_patches(clip_model):
    encoder = ImageEncoder(clip_model)
    images = torch.randn(3, 3, 32, 32)
    global_feature, patches = encoder(images)
    assert torch.allclose(global_feature, clip_model.encode_image(images), atol=1e-6)
    assert patches.shape == (3, 16, 32)  # (32 / 8)^2 patches, joint width 32
    # one patch by hand: last block's token -> ln_post -> proj
    visual = clip_model.visual
    x = encoder.embed(images).permute(1, 0, 2)
    x = visual.transformer(x).permute(1, 0, 2)
    assert torch.allclose(patches[:, 4], visual.ln_post(x[:, 5]) @ visual.proj, atol=1e-6)


def test_global_feature_alone_runs_the_last_block_for_the_class_token_only(clip_model, monkeypatch):
    encoder = ImageEncoder(clip_model)
    images = torch.randn(3, 3, 32, 32)
    global_feature, patches = encoder(images, patches=False)
    assert patches is None
    assert torch.allclose(global_feature, clip_model.encode_image(images), atol=1e-6)
    # with prompt tokens appended by a hook, the class token still attends to them
    hook = DeepTokens({-1: torch.randn(2, 64), 2: torch.randn(2, 64)})
    assert torch.allclose(encoder(images, token_hook=hook, patches=False)[0], encoder(images, token_hook=hook)[0],
                          atol=1e-6)
    calls = []
    monkeypatch.setattr(clip_model.visual.transformer.resblocks[-1], "forward", lambda x: calls.append(x) or x)
    encoder(images, patches=False)
    assert calls == []  # the full last block never ran


def test_text_encoder_matches_clip(clip_model):
    encoder = TextEncoder(clip_model)
    tokens = encoder.tokenize(["a crimson striped disc", "navy ring"])
    assert torch.allclose(encoder(encoder.token_embed(tokens), tokens), clip_model.encode_text(tokens), atol=1e-6)


def test_only_the_positions_up_to_the_last_eot_run_and_the_features_stay(clip_model):
    """EOT (largest id) of the rows at 1 and 2 -> 3 positions; the text features with the
    padding dropped equal those of the full causal pass (every position, causal mask)."""
    from leclip.backbone.model import causal_length

    assert causal_length(torch.tensor([[3, 9, 0, 0, 0], [3, 4, 8, 0, 0]])) == 3
    encoder = TextEncoder(clip_model)
    tokens = encoder.tokenize(["a crimson striped disc", "navy ring"])
    length = tokens.shape[1]
    x = encoder.token_embed(tokens) + clip_model.positional_embedding[:length]
    x = clip_model.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)  # every position
    full = clip_model.ln_final(x)[torch.arange(2), tokens.argmax(-1)] @ clip_model.text_projection
    assert causal_length(tokens) < length
    seen = []
    hook = clip_model.transformer.resblocks[0].register_forward_pre_hook(lambda _, args: seen.append(args[0].shape))
    try:
        assert torch.allclose(encoder(encoder.token_embed(tokens), tokens), full, atol=1e-6)
    finally:
        hook.remove()
    assert causal_length(tokens) in seen[0] and length not in seen[0]  # the padding did not run


def test_deep_tokens_replace_then_flow(clip_model):
    encoder = ImageEncoder(clip_model)
    token = torch.randn(1, 64)
    recorder = Recorder(DeepTokens({0: token, 1: token}, mode="replace"))
    _, patches = encoder(torch.randn(2, 3, 32, 32), token_hook=recorder)
    lengths = [recorder.seen[i].shape[1] for i in range(3)]
    assert lengths == [18, 18, 18]  # CLS + 16 patches + 1 injected token, constant
    assert torch.equal(recorder.seen[0][:, -1], token.expand(2, -1))
    assert torch.equal(recorder.seen[1][:, -1], token.expand(2, -1))  # replaced at block 1
    assert not torch.equal(recorder.seen[2][:, -1], token.expand(2, -1))  # flows on after
    assert patches.shape == (2, 16, 32)  # the injected token is never a patch


def test_tokens_listed_at_minus_one_join_before_ln_pre(clip_model):
    encoder = ImageEncoder(clip_model)
    token = torch.randn(1, 64)
    recorder = Recorder(DeepTokens({-1: token, 1: token}, mode="replace"))
    encoder(torch.randn(2, 3, 32, 32), token_hook=recorder)
    assert [recorder.seen[i].shape[1] for i in (-1, 0, 1, 2)] == [18, 18, 18, 18]
    assert torch.equal(recorder.seen[-1][:, -1], token.expand(2, -1))  # appended to the embedded tokens
    ln_pre = clip_model.visual.ln_pre
    assert torch.allclose(recorder.seen[0][:, -1], ln_pre(token).expand(2, -1), atol=1e-6)  # then ln_pre
    assert torch.equal(recorder.seen[1][:, -1], token.expand(2, -1))  # replaced at block 1, no ln_pre


def test_deep_tokens_concat_grows_the_sequence(clip_model):
    encoder = ImageEncoder(clip_model)
    tokens = torch.randn(2, 64)
    recorder = Recorder(DeepTokens({0: tokens, 1: tokens}, mode="concat"))
    encoder(torch.randn(1, 3, 32, 32), token_hook=recorder)
    assert [recorder.seen[i].shape[1] for i in range(3)] == [19, 21, 21]


def test_injection_changes_the_global_feature(clip_model):
    encoder = ImageEncoder(clip_model)
    images = torch.randn(2, 3, 32, 32)
    plain, _ = encoder(images)
    injected, _ = encoder(images, token_hook=DeepTokens({0: torch.randn(1, 64)}))
    assert not torch.allclose(plain, injected)


def test_replace_at_overwrites_text_prompt_positions(clip_model):
    encoder = TextEncoder(clip_model)
    tokens = encoder.tokenize(["x x crimson disc."])
    deep = torch.randn(2, 32)
    recorder = Recorder(ReplaceAt({1: deep}, start=1))
    encoder(encoder.token_embed(tokens), tokens, token_hook=recorder)
    assert torch.equal(recorder.seen[1][0, 1:3], deep)
    assert recorder.seen[1].shape == recorder.seen[0].shape


def test_bad_hook_mode():
    with pytest.raises(ValueError, match="use one of"):
        DeepTokens({0: torch.zeros(1, 4)}, mode="prepend")


def test_resnet_backbone_refuses_patch_features():
    model = build_clip(random_resnet_state_dict())
    encoder = ImageEncoder(model)
    features, patches = encoder(torch.randn(1, 3, 64, 64), patches=False)
    assert features.shape[-1] == 32 and patches is None
    with pytest.raises(ValueError, match="needs a ViT CLIP backbone"):
        encoder(torch.randn(1, 3, 64, 64))


def random_resnet_state_dict():
    from clip.model import CLIP

    torch.manual_seed(0)
    return CLIP(32, 64, (1, 1, 1, 1), 64, None, 16, 49408, 32, 2, 1).state_dict()


def test_autocast_is_a_no_op_on_cpu(clip_model):
    with autocast("cpu", "amp"):
        out = clip_model.encode_image(torch.randn(1, 3, 32, 32))
    assert out.dtype == torch.float32
