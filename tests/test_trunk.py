"""The embedded world's pretrained classifier weights (leclip.world.trunk) and how CCD's
CAM classifier loads them (TRAINER.CCD.WEIGHTS "embedded", or any state dict without
the final layer)."""
import numpy as np
import pytest
import torch
import torchvision

from leclip.multilabel.cam import CAMClassifier
from leclip.world import render, trunk


def test_final_layer_keys_name_the_classifier_layer():
    assert trunk.final_layer_keys(torchvision.models.resnet18(num_classes=7)) == ["fc.weight", "fc.bias"]
    keys = trunk.final_layer_keys(torchvision.models.mobilenet_v3_small(num_classes=7))
    assert keys == ["classifier.3.weight", "classifier.3.bias"]


def test_saved_trunk_drops_the_final_layer_in_fp16(tmp_path):
    model = torchvision.models.squeezenet1_1(num_classes=len(trunk.CLASSES))
    path = tmp_path / "t.pt"
    trunk.save_trunk(model, str(path))
    saved = torch.load(path, weights_only=True)
    assert set(saved) == set(model.state_dict()) - {"classifier.1.weight", "classifier.1.bias"}
    assert saved["features.0.weight"].dtype == torch.float16
    assert torch.equal(saved["features.0.weight"], model.features[0].weight.detach().half())


def test_cam_classifier_loads_weights_without_the_final_layer(tmp_path):
    state = torchvision.models.squeezenet1_1(weights=None).state_dict()
    trunk_only = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    torch.save(trunk_only, tmp_path / "trunk.pth")
    model = CAMClassifier(3, "squeezenet1_1", weights_path=str(tmp_path / "trunk.pth"))
    assert torch.equal(model.backbone[0].weight, state["features.0.weight"])
    del trunk_only["features.0.weight"]  # a key the trunk reads
    torch.save(trunk_only, tmp_path / "short.pth")
    with pytest.raises(ValueError, match=r"do not fit 'squeezenet1_1' \(missing keys \['features.0.weight'\]"):
        CAMClassifier(3, "squeezenet1_1", weights_path=str(tmp_path / "short.pth"))


def test_embedded_weights_resolve_to_the_shipped_asset(monkeypatch, tmp_path):
    monkeypatch.setattr(trunk, "ASSETS", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"backbone 'squeezenet1_1' \(shipped for: none\).*--backbone squeezenet1_1"):
        CAMClassifier(3, "squeezenet1_1", weights_path="embedded")
    pretrained = torchvision.models.squeezenet1_1(num_classes=len(trunk.CLASSES))
    trunk.save_trunk(pretrained, trunk.asset_path("squeezenet1_1"))
    (tmp_path / "synth-vit.pt").write_bytes(b"")  # the CLIP's asset is not a classifier's
    assert trunk.shipped_backbones() == ["squeezenet1_1"]
    model = CAMClassifier(3, "squeezenet1_1", weights_path="embedded")
    assert torch.equal(model.backbone[0].weight, pretrained.features[0].weight.detach().half().float())


def test_the_package_ships_mobilenet_weights_that_name_single_objects():
    assert "mobilenet_v3_small" in trunk.shipped_backbones()
    model = torchvision.models.mobilenet_v3_small(num_classes=len(trunk.CLASSES))
    missing, unexpected = model.load_state_dict(torch.load(trunk.asset_path("mobilenet_v3_small"), weights_only=True), strict=False)
    assert missing == trunk.final_layer_keys(model) and not unexpected
    # the nearest class centroid of its features names fresh objects far above chance
    # (1/35) and above random weights
    assert trunk.feature_accuracy(model) > 25
    assert trunk.feature_accuracy(torchvision.models.mobilenet_v3_small(num_classes=len(trunk.CLASSES))) < 20

def test_single_objects_are_deterministic_and_labelled_by_shape_and_family():
    a_images, a_labels = trunk.single_objects(np.random.default_rng(0), 6)
    b_images, b_labels = trunk.single_objects(np.random.default_rng(0), 6)
    assert np.array_equal(a_images, b_images) and np.array_equal(a_labels, b_labels)
    assert a_images.shape == (6, render.IMAGE_SIZE, render.IMAGE_SIZE, 3) and a_images.dtype == np.uint8
    assert len(trunk.CLASSES) == 35 and len(set(trunk.CLASSES)) == 35


def test_pretraining_is_deterministic_and_learns():
    first = trunk.pretrain("squeezenet1_1", steps=3, batch_size=4, input_size=32, log=None)
    again = trunk.pretrain("squeezenet1_1", steps=3, batch_size=4, input_size=32, log=None)
    frozen = trunk.pretrain("squeezenet1_1", steps=3, batch_size=4, input_size=32, lr=0.0, log=None)
    for (name, a), b in zip(first.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name
    assert not torch.equal(first.features[0].weight, frozen.features[0].weight)
