"""Exact speed paths outside the text encoder: each gives the plain path's outputs to 1e-5."""
import copy

import torch

from leclip.multilabel.cam import CAMClassifier


def relative(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def test_cam_classifier_runs_channels_last_with_the_plain_layouts_outputs():
    torch.manual_seed(0)
    model = CAMClassifier(5, "resnet18", weights_path="random").eval()
    assert model.head.weight.is_contiguous(memory_format=torch.channels_last)
    assert model.backbone[0].weight.is_contiguous(memory_format=torch.channels_last)
    plain = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
    assert plain.backbone[0].weight.is_contiguous()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        logits, cams = model(images, return_cams=True)
        reference = plain.head(plain.backbone(images))  # contiguous weights and input all the way
    reference = torch.where(reference > 0, reference * model.cam_coeff, reference)
    assert cams.is_contiguous()  # the boxes, the figures and any view of them see the usual layout
    assert relative(cams, reference) < 1e-5
    assert relative(logits, reference.mean(dim=(2, 3))) < 1e-5


def test_the_channels_last_classifier_learns_with_the_plain_layouts_gradients():
    """Float rounding only: in fp32 this batch-normalised ResNet's gradients are ~1e-5 off
    their float64 values in either layout (measured: plain up to 1.5e-5, channels-last up
    to 2.3e-5), so the two layouts agree to 5e-5, not 1e-5."""
    torch.manual_seed(1)
    model = CAMClassifier(3, "resnet18", weights_path="random").train()
    plain = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
    images = torch.randn(2, 3, 64, 64)
    model(images).square().sum().backward()
    out = plain.head(plain.backbone(images))
    torch.where(out > 0, out * plain.cam_coeff, out).mean(dim=(2, 3)).square().sum().backward()
    for (name, p), q in zip(model.named_parameters(), plain.parameters()):
        assert relative(p.grad, q.grad) < 5e-5, name
