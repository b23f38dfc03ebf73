"""LoCoOp against hand computations: region selection, entropy term, local features,
GL-MCM; and a run that learns on the embedded world."""
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from leclip.backbone import PromptLearner, random_clip
from leclip.trainers.coop import PromptedCLIP
from leclip.trainers.locoop import (
    LELoCoOp,
    locoop_loss,
    non_label_region_entropy,
    non_label_regions,
    resolve_top_k,
)

CONFIG = "configs/trainers/LELoCoOp/synth.yaml"

# two images, three patches, three classes; labels 0 and 1; no ties within a patch
LOCAL = torch.tensor(
    [
        [[5.0, 0.5, 0.0], [0.0, 3.0, 1.0], [1.0, 0.5, 2.0]],
        [[0.0, 0.5, 4.0], [2.0, 1.0, 0.0], [0.0, 1.0, 0.5]],
    ]
)
LABELS = torch.tensor([0, 1])


def entropy_by_hand(logits):
    exps = [math.exp(v) for v in logits]
    probs = [e / sum(exps) for e in exps]
    return -sum(p * math.log(p + 1e-5) for p in probs)


def test_regions_whose_top_k_excludes_the_label():
    # top-1 of image 0's patches: 0 (its label), 1, 2; of image 1's: 2, 0, 1 (its label)
    assert non_label_regions(LOCAL, LABELS, 1).tolist() == [[False, True, True], [True, True, False]]
    # top-2: only image 0's second patch ({1, 2}) misses its label
    assert non_label_regions(LOCAL, LABELS, 2).tolist() == [[False, True, False], [False, False, False]]


def test_entropy_of_the_selected_regions_by_hand():
    top1 = [LOCAL[0, 1], LOCAL[0, 2], LOCAL[1, 0], LOCAL[1, 1]]
    expected = sum(entropy_by_hand(p.tolist()) for p in top1) / 4
    assert non_label_region_entropy(LOCAL, LABELS, 1).item() == pytest.approx(expected, rel=1e-5)
    expected = entropy_by_hand(LOCAL[0, 1].tolist())
    assert non_label_region_entropy(LOCAL, LABELS, 2).item() == pytest.approx(expected, rel=1e-5)
    # with top-K = all classes every patch contains its label: no region, no term
    assert non_label_region_entropy(LOCAL, LABELS, 3).item() == 0.0


def test_loss_is_cross_entropy_minus_lambda_entropy():
    logits = torch.tensor([[2.0, 0.0, 1.0], [0.5, 1.5, 0.0]])
    ce = (-math.log(math.exp(2) / (math.exp(2) + 1 + math.exp(1))) - math.log(math.exp(1.5) / (math.exp(0.5) + math.exp(1.5) + 1))) / 2
    entropy = sum(entropy_by_hand(p.tolist()) for p in [LOCAL[0, 1], LOCAL[0, 2], LOCAL[1, 0], LOCAL[1, 1]]) / 4
    loss = locoop_loss(logits, LOCAL, LABELS, top_k=1, lam=0.25)
    assert loss.item() == pytest.approx(ce - 0.25 * entropy, rel=1e-5)


def test_entropy_gradient_pushes_selected_regions_to_uniform():
    local = LOCAL.clone().requires_grad_(True)
    (-non_label_region_entropy(local, LABELS, 1)).backward()
    assert torch.count_nonzero(local.grad[0, 0]) == 0 and torch.count_nonzero(local.grad[1, 2]) == 0
    # descending on -H lowers the top logit of a selected patch
    assert local.grad[0, 1, 1] > 0 and local.grad[1, 0, 2] > 0


def test_top_k_per_dataset():
    assert [resolve_top_k(0, k) for k in (12, 50, 98, 1000)] == [2, 10, 20, 200]
    assert resolve_top_k(5, 12) == 5
    for bad in (12, 200, -1):
        with pytest.raises(ValueError, match=r"TRAINER.LOCOOP.TOPK=.*use 1\.\.11"):
            resolve_top_k(bad, 12)


def last_block_input(clip_model, images):
    """ln_pre(class token + patches + positions), then every block but the last."""
    v = clip_model.visual
    x = v.conv1(images).flatten(2).transpose(1, 2)
    x = torch.cat([v.class_embedding.expand(len(x), 1, -1), x], dim=1) + v.positional_embedding
    x = v.transformer.resblocks[:-1](v.ln_pre(x).transpose(0, 1))
    return x.transpose(0, 1)


@pytest.mark.parametrize("local", ["value", "tokens"])
def test_local_logits_follow_the_released_equations(local):
    clip_model = random_clip(vision_layers=3, context_length=24, seed=6)
    scale = clip_model.logit_scale.exp().item()
    model = PromptedCLIP(clip_model, PromptLearner(clip_model, ["disc", "ring"], n_ctx=4), scale, local=local)
    images = torch.randn(2, 3, 32, 32)
    v, block = clip_model.visual, clip_model.visual.transformer.resblocks[-1]
    x = last_block_input(clip_model, images)
    if local == "value":
        # released: the last block with attention replaced by out_proj(W_v ln_1(x))
        width = x.shape[-1]
        values = F.linear(block.ln_1(x), block.attn.in_proj_weight[2 * width :], block.attn.in_proj_bias[2 * width :])
        y = x + block.attn.out_proj(values)
        tokens = y + block.mlp(block.ln_2(y))
    else:
        tokens = block(x.transpose(0, 1)).transpose(0, 1)
    patches = v.ln_post(tokens[:, 1:]) @ v.proj
    text = model.encode_classes()
    expected = clip_model.logit_scale.exp() * F.normalize(patches, dim=-1) @ text.t()
    out = model(images, text)
    assert out["local_logits"].shape == (2, 16, 2)
    assert torch.allclose(out["local_logits"], expected, atol=1e-4)
    global_expected = clip_model.logit_scale.exp() * F.normalize(clip_model.encode_image(images), dim=-1) @ text.t()
    assert torch.allclose(out["logits"], global_expected, atol=1e-4)


def test_predict_uses_global_probabilities_and_gl_mcm():
    logits = torch.tensor([[20.0, 10.0]])  # scale 50: similarities 0.4, 0.2
    local = torch.tensor([[[5.0, 15.0], [10.0, 10.0]]])  # similarities (0.1, 0.3), (0.2, 0.2)
    trainer = SimpleNamespace(
        forward_eval=lambda images, classes: {"logits": logits, "local_logits": local}, logit_scale=50.0
    )
    probs, score = LELoCoOp.predict(trainer, None, None)
    assert probs[0, 0].item() == pytest.approx(1 / (1 + math.exp(-10)))
    global_mcm = 1 / (1 + math.exp(-0.2))
    local_mcm = max(1 / (1 + math.exp(-0.2)), 0.5)
    assert score.item() == pytest.approx(global_mcm + local_mcm)


def test_bad_local_features_key_is_named(run_trainer):
    with pytest.raises(ValueError, match="TRAINER.LOCOOP.LOCAL_FEATURES='cls'"):
        run_trainer("LELoCoOp", CONFIG, ["TRAINER.LOCOOP.LOCAL_FEATURES", "cls"])


def test_top_k_above_the_id_classes_is_named(run_trainer):
    with pytest.raises(ValueError, match="TRAINER.LOCOOP.TOPK=12 with 12 ID classes"):
        run_trainer("LELoCoOp", CONFIG, ["TRAINER.LOCOOP.TOPK", "12", "OPTIM.MAX_EPOCH", "0"])
