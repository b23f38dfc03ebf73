"""LoRA attention against nn.MultiheadAttention with merged weights W + s B A, the
per-projection choice, dropout, A's initialisation, the released defaults and errors."""
import copy
import math

import pytest
import torch
import torch.nn as nn

from leclip.backbone import TextEncoder, random_clip
from leclip.lora import LoRAAttention, LoRAProjections, apply_lora

WIDTH, HEADS = 8, 2


def attention_pair(params, r=4, alpha=3.0, seed=0):
    """(LoRAAttention with non-zero A, B and biases, the MHA with merged weights)."""
    torch.manual_seed(seed)
    base = nn.MultiheadAttention(WIDTH, HEADS)
    with torch.no_grad():
        base.in_proj_bias.normal_()  # MHA starts at zero bias: make the bias visible
        base.out_proj.bias.normal_()
    lora = LoRAProjections(WIDTH, r, alpha, 0.0, params)
    for b in lora.B.values():
        nn.init.normal_(b)
    merged = copy.deepcopy(base)
    scaling = alpha / math.sqrt(r)
    with torch.no_grad():
        for i, name in enumerate(("q", "k", "v")):
            if name in params:
                merged.in_proj_weight[i * WIDTH:(i + 1) * WIDTH] += scaling * lora.B[name] @ lora.A[name]
    return LoRAAttention(base, lora), merged


CAUSAL = torch.full((5, 5), float("-inf")).triu(1)


@pytest.mark.parametrize("params", [("q", "k", "v"), ("q", "k"), ("v",)])
def test_lora_attention_is_attention_with_the_merged_weights(params):
    lora_attn, merged = attention_pair(params)
    x = torch.randn(5, 3, WIDTH)  # [L, B, W]
    out, weights = lora_attn(x, x, x, need_weights=False, attn_mask=CAUSAL)
    expected, _ = merged(x, x, x, need_weights=False, attn_mask=CAUSAL)
    assert weights is None
    assert torch.allclose(out, expected, atol=1e-5)


def test_lora_delta_is_scaled_by_alpha_over_sqrt_r():
    lora = LoRAProjections(2, r=4, alpha=3.0, dropout=0.0, params=("q",))
    with torch.no_grad():
        lora.A["q"].copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]]))
        lora.B["q"].copy_(torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]]))
    x = torch.tensor([[2.0, 3.0]])
    # B A x = (x1, x1 + x2) = (2, 5), times 3 / sqrt 4
    assert torch.allclose(lora.delta("q", x), torch.tensor([[3.0, 7.5]]))
    assert lora.delta("k", x) == 0  # not adapted


def test_dropout_acts_on_the_lora_input_in_training_only():
    torch.manual_seed(0)
    lora = LoRAProjections(16, r=2, alpha=1.0, dropout=0.5, params=("q",))
    nn.init.normal_(lora.B["q"])
    x = torch.randn(4, 16)
    lora.eval()
    clean = lora.delta("q", x)
    lora.train()
    assert not torch.allclose(lora.delta("q", x), clean)
    no_dropout = LoRAProjections(16, r=2, alpha=1.0, dropout=0.0, params=("q",)).train()
    nn.init.normal_(no_dropout.B["q"])
    assert torch.equal(no_dropout.delta("q", x), no_dropout.eval().delta("q", x))


def test_a_is_kaiming_uniform_with_a_sqrt5():
    torch.manual_seed(0)
    a = LoRAProjections(64, r=4, alpha=1.0, dropout=0.0, params=("q",)).A["q"]
    # gain sqrt(2 / (1 + 5)) times sqrt(3 / fan_in): the bound is 1 / sqrt(fan_in) = 1/8
    assert a.abs().max() <= 1 / 8
    assert a.abs().max() > 0.95 / 8  # 256 draws reach close to the bound


def test_apply_lora_defaults_are_the_released_ones():
    clip_model = random_clip(seed=5)
    loras = apply_lora(clip_model)
    assert len(loras) == 4  # both towers, 2 blocks each
    lora = loras[0]
    assert lora.params == ("q", "k", "v")
    assert lora.A["q"].shape[0] == 2  # r
    assert lora.scaling == pytest.approx(1 / math.sqrt(2))  # alpha 1
    assert isinstance(lora.dropout, nn.Dropout) and lora.dropout.p == 0.25


def test_lora_text_tower_runs_under_bf16_autocast():
    """q, k, v are bf16 there while clip's residual stream and causal mask stay fp32."""
    clip_model = random_clip(seed=5)
    tokens = TextEncoder(clip_model).tokenize(["a red disc"])
    for lora in apply_lora(clip_model, encoders=("text",), dropout=0.0):
        for b in lora.B.values():
            nn.init.normal_(b)
    clip_model.eval()
    reference = clip_model.encode_text(tokens)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = clip_model.encode_text(tokens)
    assert torch.allclose(out.float(), reference, atol=0.1)


def test_apply_lora_errors_name_the_fix():
    with pytest.raises(ValueError, match="use vision and/or text"):
        apply_lora(random_clip(seed=5), encoders=("image",))
    resnet = random_clip(vision_layers=(1, 1, 1, 1), vision_width=16)
    with pytest.raises(ValueError, match="ViT"):
        apply_lora(resnet, encoders=("vision",))
