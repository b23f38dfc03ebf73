"""CLIP-Adapter against hand computations: the residual blend and the logits; and a run
that learns on the embedded world."""
import pytest
import torch
import torch.nn.functional as F

from leclip.adapters import ResidualAdapter
from leclip.backbone import class_text_features, random_clip
from leclip.trainers.clip_adapter import AdaptedCLIP

CONFIG = "configs/trainers/LECLIPAdapter/synth.yaml"


def test_adapter_blend_by_hand():
    adapter = ResidualAdapter(4, reduction=2, ratio=0.2)
    assert adapter.fc[0].weight.shape == (2, 4) and adapter.fc[2].weight.shape == (4, 2)
    assert adapter.fc[0].bias is None and adapter.fc[2].bias is None
    with torch.no_grad():
        adapter.fc[0].weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 1, -1, 0]]))
        adapter.fc[2].weight.copy_(torch.tensor([[1.0, 0], [0, 1], [1, 1], [-1, 0]]))
    x = torch.tensor([[1.0, 2.0, 3.0, -1.0]])
    # hidden relu(1, 2 - 3) = (1, 0); A(x) = relu(1, 0, 1, -1) = (1, 0, 1, 0)
    # 0.2 * A(x) + 0.8 * x
    assert torch.allclose(adapter(x), torch.tensor([[1.0, 1.6, 2.6, -0.8]]))


def test_logits_are_the_scaled_cosine_of_the_blended_image_feature():
    torch.manual_seed(0)
    clip_model = random_clip(seed=8).requires_grad_(False)
    classes = ["red disc", "blue ring", "green square"]
    width = clip_model.text_projection.shape[1]
    scale = clip_model.logit_scale.exp().item()
    text_features = class_text_features(clip_model, classes, "a photo of a {}.")
    model = AdaptedCLIP(clip_model, text_features, ResidualAdapter(width, reduction=4, ratio=0.2), scale)
    images = torch.randn(3, 3, 32, 32)
    logits = model(images, model.encode_classes())["logits"]

    f = clip_model.encode_image(images)
    w1, w2 = model.adapter.fc[0].weight, model.adapter.fc[2].weight
    blended = 0.2 * F.relu(F.relu(f @ w1.t()) @ w2.t()) + 0.8 * f
    text = F.normalize(class_text_features(clip_model, classes, "a photo of a {}."), dim=-1)
    expected = clip_model.logit_scale.exp() * F.normalize(blended, dim=-1) @ text.t()
    assert w1.shape == (width // 4, width)
    assert torch.allclose(logits, expected, atol=1e-5)

    logits.sum().backward()
    assert w1.grad is not None and w1.grad.abs().sum() > 0
    assert all(p.grad is None for p in clip_model.parameters())


def test_bad_ratio_is_named(run_trainer):
    with pytest.raises(ValueError, match=r"RATIO=1\.5, REDUCTION=4"):
        run_trainer("LECLIPAdapter", CONFIG, ["TRAINER.CLIP_ADAPTER.RATIO", "1.5"])
