"""CCD's reusable pieces against hand computations on small tensors."""
import math
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from leclip.multilabel.cam import (
    CAMClassifier,
    calibrate_threshold,
    cam_boxes,
    crop_resize,
    jitter_boxes,
    normalise_cams,
)
from leclip.multilabel.clip_labels import (
    blend_update,
    cdul_aggregate,
    class_bias,
    clip_probs,
    debias,
    grid_boxes,
    single_positive,
    unreliable,
)
from leclip.multilabel.label_update import cam_candidates, cam_label_update, cdul_initial_labels, crops_update
from leclip.multilabel.losses import (
    LabelEstimator,
    assume_negative_loss,
    assume_negative_ls_loss,
    consistency_loss,
    role_loss,
    soft_bce,
)
from leclip.multilabel.selection import pseudo_label_map, select_epoch

LOG2 = math.log(2.0)


# ---- CLIP labels -----------------------------------------------------------------------

def test_clip_probs_scale_and_unreliable_flag():
    image = torch.tensor([[2.0, 0.0]])  # normalised to (1, 0)
    text = torch.tensor([[1.0, 0.0], [0.0, 3.0]])  # cos 1 and 0
    probs = clip_probs(image, text, logit_scale=2.0)
    expected = torch.tensor([[math.exp(2.0), 1.0]]) / (math.exp(2.0) + 1.0)
    assert torch.allclose(probs, expected)
    flat = torch.full((1, 10), 0.1)  # entropy ln 10 = 2.30 > 2
    peaked = torch.tensor([[0.91] + [0.01] * 9])  # entropy 0.50
    assert unreliable(torch.cat([flat, peaked])).tolist() == [True, False]


def test_class_bias_fills_a_class_never_top1():
    probs = torch.tensor([[0.6, 0.3, 0.1], [0.8, 0.1, 0.1], [0.2, 0.6, 0.2], [0.1, 0.1, 0.8]])
    reliable = torch.tensor([True, True, True, False])  # the only class-2 top-1 is unreliable
    bias = class_bias(probs, reliable)
    assert torch.allclose(bias, torch.tensor([0.7, 0.6, 0.65]))  # (0.6+0.8)/2, 0.6, mean of both
    assert torch.allclose(class_bias(probs), torch.tensor([0.7, 0.6, 0.8]))  # class 2 seen once at 0.8


def test_debias_floors_first_then_divides_and_clamps():
    bias = torch.tensor([0.5, 0.5, 0.25])
    probs = torch.tensor([[0.01, 0.2, 0.5]])
    # 0.01 -> floor 0.05 -> 0.1; 0.2 -> 0.4; 0.5 / 0.25 = 2 -> 1
    assert torch.allclose(debias(probs, bias, ls_coeff=20), torch.tensor([[0.1, 0.4, 1.0]]))


def test_blend_update_ratio_floor_and_unclamped_local():
    old = torch.tensor([[0.2, 0.5, 0.3]])
    crop_max = torch.tensor([[0.6, 0.0, 0.1]])
    bias = torch.tensor([0.5, 0.5, 0.5])
    # local = [1.2, 0.05/0.5 = 0.1, 0.2]; new = 0.2 old + 0.8 local
    new = blend_update(old, crop_max, bias, ratio=0.2, ls_coeff=20)
    assert torch.allclose(new, torch.tensor([[1.0, 0.18, 0.22]]))  # 0.04 + 0.96 -> clamp 1
    clamped = blend_update(old, crop_max, bias, ratio=0.2, ls_coeff=20, clamp_local=True)
    assert torch.allclose(clamped, torch.tensor([[0.84, 0.18, 0.22]]))


def test_cdul_gamma_rule():
    global_probs = torch.tensor([[0.2, 0.6]])
    tiles = torch.tensor([[[0.7, 0.4], [0.1, 0.2], [0.3, 0.3]]])  # [1 image, 3 tiles, 2 classes]
    # class 0: alpha 0.7 >= 0.5 -> 0.7; class 1: alpha 0.4 < 0.5 -> beta 0.2; mean with global
    assert torch.allclose(cdul_aggregate(global_probs, tiles, zeta=0.5), torch.tensor([[0.45, 0.4]]))


def test_grid_boxes_and_single_positive():
    boxes = grid_boxes(6, 9, grid=3)
    assert boxes.shape == (9, 4)
    assert boxes[0].tolist() == [0, 0, 3, 2] and boxes[5].tolist() == [6, 2, 9, 4]
    assert single_positive(torch.tensor([[0.1, 0.7, 0.2]])).tolist() == [[0.0, 1.0, 0.0]]


# ---- CAM -> boxes -> crops ---------------------------------------------------------------

def hot_map(height, width, pixels):
    cam = torch.zeros(1, height, width)
    for y, x in pixels:
        cam[0, y, x] = 1.0
    return cam


def test_cam_boxes_both_rules_on_a_hand_map():
    cam = hot_map(8, 10, [(1, 6), (2, 3), (4, 5)])  # at image size: the upsampling is the identity
    bbox = cam_boxes(cam, (8, 10), rule="bbox", grow=0)
    assert bbox.tolist() == [[3, 1, 7, 5]]  # columns 3..6, rows 1..4, half-open
    released = cam_boxes(cam, (8, 10), rule="released", grow=0)
    assert released.tolist() == [[5, 1, 6, 4]]  # first hit (1, 6), last hit (4, 5)
    grown = cam_boxes(cam, (8, 10), rule="bbox", grow=2, grow_ref=10)  # 2 px per 10 px
    assert torch.allclose(grown, torch.tensor([[1.0, 1 - 1.6, 9.0, 5 + 1.6]]).clamp(min=0))


def test_cam_boxes_clip_to_the_image_and_cover_a_flat_map():
    corner = hot_map(8, 10, [(0, 0), (7, 9)])
    assert cam_boxes(corner, (8, 10), grow=3, grow_ref=10).tolist() == [[0, 0, 10, 8]]
    several = torch.cat([corner, hot_map(8, 10, [(3, 4)]), corner])
    in_chunks = cam_boxes(several, (8, 10), grow=3, grow_ref=10, chunk=2)
    assert torch.equal(in_chunks, cam_boxes(several, (8, 10), grow=3, grow_ref=10))
    assert torch.allclose(in_chunks[1], torch.tensor([1.0, 0.6, 8.0, 6.4]))  # (3, 4) grown by 3 and 2.4 px
    flat = torch.ones(1, 4, 4)  # no pixel above the threshold after normalisation
    assert cam_boxes(flat, (8, 10), grow=0).tolist() == [[0, 0, 10, 8]]
    assert cam_boxes(flat, (8, 10), rule="released", grow=0).tolist() == [[0, 0, 10, 8]]


def test_normalise_cams():
    cam = torch.tensor([[[1.0, 3.0], [2.0, 5.0]], [[0.0, 1e-5], [0.0, 0.0]]])
    expected = torch.tensor([[[0.0, 0.5], [0.25, 1.0]], [[0.0, 0.5], [0.0, 0.0]]])  # eps 1e-5 matters on the 2nd
    assert torch.allclose(normalise_cams(cam), expected, atol=1e-5)


def test_crop_resize_matches_released_bilinear_resize():
    images = torch.arange(2 * 3 * 12 * 16, dtype=torch.float32).reshape(2, 3, 12, 16).sin()
    boxes = torch.tensor([[2.0, 1.0, 14.0, 11.0], [4.0, 3.0, 9.0, 7.0]])
    crops = crop_resize(images, boxes, torch.tensor([1, 0]), (5, 6))
    down = F.interpolate(images[1:2, :, 1:11, 2:14], (5, 6), mode="bilinear", align_corners=False)
    assert torch.allclose(crops[0:1], down, atol=1e-5)  # downsampled: identical everywhere
    crops = crop_resize(images, boxes, torch.tensor([1, 0]), (8, 10))
    up = F.interpolate(images[0:1, :, 3:7, 4:9], (8, 10), mode="bilinear", align_corners=False)
    assert torch.allclose(crops[1:2, :, 1:-1, 1:-1], up[:, :, 1:-1, 1:-1], atol=1e-5)  # upsampled: inside


def test_jitter_boxes_keeps_the_box_first_and_stays_inside():
    boxes = torch.tensor([[2.0, 2.0, 8.0, 6.0]])
    generator = torch.Generator().manual_seed(0)
    out, index = jitter_boxes(boxes, torch.tensor([3]), 4, (8, 10), jitter=0.5, generator=generator)
    assert out.shape == (4, 4) and index.tolist() == [3, 3, 3, 3]
    assert out[0].tolist() == boxes[0].tolist()
    assert not torch.equal(out[1], out[0])
    assert bool((out[:, 0::2] >= 0).all() & (out[:, 0::2] <= 10).all() & (out[:, 1::2] <= 8).all())
    assert bool((out[:, 2:] >= out[:, :2]).all())


def test_calibrate_threshold_on_a_constructed_matrix():
    scores = torch.tensor([
        [0.9, 0.8, 0.7, 0.6, 0.5, 0.0525, 0.0515, 0.0512, 0.0505, 0.01],
        [0.9, 0.8, 0.7, 0.6, 0.0545, 0.0535, 0.01, 0.01, 0.01, 0.01],
    ])
    # mean count at 0.050: (9+6)/2 = 7.5; 0.051: 7; 0.052: 6 (not < 6); 0.053: 5.5 -> inside
    threshold, mean_count = calibrate_threshold(scores, bound=4)
    assert threshold == pytest.approx(0.053) and mean_count == 5.5
    tie = torch.tensor([[0.9, 0.8, 0.7, 0.6, 0.05]])  # a score equal to the threshold is selected
    assert calibrate_threshold(tie, bound=4) == (pytest.approx(0.05), 5.0)


def test_calibrate_threshold_equals_the_stepwise_loop():
    scores = torch.rand(50, 20, generator=torch.Generator().manual_seed(3)) ** 3
    threshold = 0.05  # the released loop, judged on the whole matrix
    while not 4 < float((scores >= threshold).sum(dim=1).float().mean()) < 6:
        threshold += 0.001
    assert threshold > 0.06  # several steps were needed
    assert calibrate_threshold(scores, bound=4)[0] == pytest.approx(threshold)
    with pytest.warns(UserWarning, match="no threshold"):
        threshold, mean_count = calibrate_threshold(torch.full((3, 10), 0.01), bound=4)
    assert threshold == pytest.approx(0.05) and mean_count == 0.0


# ---- losses ------------------------------------------------------------------------------

def test_soft_bce_with_image_weights():
    logits = torch.tensor([[math.log(3.0)], [0.0]])  # sigmoid 0.75, 0.5
    targets = torch.tensor([[1.0], [0.3]])
    assert soft_bce(logits, targets).item() == pytest.approx((-math.log(0.75) + LOG2) / 2, rel=1e-5)
    weighted = soft_bce(logits, targets, weights=torch.tensor([1.0, 0.0]))
    assert weighted.item() == pytest.approx(-math.log(0.75) / 2, rel=1e-5)


def test_consistency_loss_gradients_only_through_view2():
    view1 = torch.tensor([[0.0, math.log(3.0)]], requires_grad=True)
    view2 = torch.tensor([[math.log(3.0), 0.0]], requires_grad=True)
    loss = consistency_loss(view1, view2)
    target = torch.tensor([0.5, 0.75])
    p2 = torch.tensor([0.75, 0.5])
    expected = -(target * torch.log(p2) + (1 - target) * torch.log(1 - p2)).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    assert view1.grad is None
    assert torch.allclose(view2.grad, (torch.tensor([[0.75, 0.5]]) - target) / 2)


def test_assume_negative_losses():
    logits = torch.tensor([[0.0, math.log(3.0)]])  # sigmoid 0.5, 0.75
    positives = torch.tensor([[0.0, 1.0]])
    assert assume_negative_loss(logits, positives).item() == pytest.approx((LOG2 - math.log(0.75)) / 2, rel=1e-5)
    smoothed = (LOG2 - (0.9 * math.log(0.75) + 0.1 * math.log(0.25))) / 2  # targets 0.1, 0.9
    assert assume_negative_ls_loss(logits, positives, smoothing=0.1).item() == pytest.approx(smoothed, rel=1e-5)


def test_role_loss_value_and_detached_cross_terms():
    logits = torch.tensor([[0.0, math.log(3.0)]], requires_grad=True)  # f = 0.5, 0.75
    estimate_logits = torch.tensor([[-math.log(3.0), 0.0]], requires_grad=True)  # y~ = 0.25, 0.5
    positives = torch.tensor([[0.0, 1.0]])
    loss = role_loss(logits, estimate_logits, positives, expected_num_pos=1.0)
    observed = (-math.log(0.75) - math.log(0.5)) / 2
    cross = (
        LOG2  # BCE(f0 = .5, .25)
        - (0.5 * math.log(0.25) + 0.5 * math.log(0.75))  # BCE(y0 = .25, .5)
        - (0.5 * math.log(0.75) + 0.5 * math.log(0.25))  # BCE(f1 = .75, .5)
        + LOG2  # BCE(y1 = .5, .75)
    ) / 2
    penalty = (1.25 - 1) ** 2 / 4 + (0.75 - 1) ** 2 / 4
    assert loss.item() == pytest.approx(0.5 * (observed + cross + penalty), rel=1e-5)
    loss.backward()
    # d/dz: observed [0, (0.75-1)/2], BCE(f, sg y~) [(0.5-0.25)/2, (0.75-0.5)/2],
    # penalty 2 (1.25-1)/4 f(1-f) = [0.03125, 0.0234375]; nothing from BCE(y~, sg f)
    assert torch.allclose(logits.grad, 0.5 * torch.tensor([[0.125 + 0.03125, -0.125 + 0.125 + 0.0234375]]))


def test_label_estimator_initialisation():
    positives = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    estimator = LabelEstimator(positives)
    est = estimator.estimates()
    assert torch.allclose(est[positives > 0], torch.tensor(0.995))
    others = est[positives == 0]
    assert bool(((others >= 0.4) & (others <= 0.6)).all()) and others.std() > 0
    assert torch.equal(estimator(torch.tensor([1])), estimator.logits[1:2])


# ---- the classifier ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def resnet18_classifier():
    return CAMClassifier(5, "resnet18", weights_path="random", cam_coeff=3.0)


def test_cam_classifier_shapes_and_cam_coeff(resnet18_classifier):
    model = resnet18_classifier.eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        logits, cams = model(images, return_cams=True)
        raw = model.head(model.backbone(images))
    assert logits.shape == (2, 5) and cams.shape == (2, 5, 2, 2)
    assert torch.allclose(cams, torch.where(raw > 0, 3 * raw, raw))
    assert bool((raw < 0).any() & (raw > 0).any())
    assert torch.allclose(logits, cams.mean(dim=(2, 3)))
    groups = model.param_groups(1e-5)
    assert [g["lr"] for g in groups] == [1e-5, pytest.approx(1e-4)]
    assert groups[1]["params"][0] is model.head.weight


def test_cam_classifier_starts_random_only_when_asked_and_loads_a_state_dict(tmp_path):
    with pytest.raises(ValueError, match="TRAINER.CCD.WEIGHTS is empty: .*IMAGENET1K_V1.*or 'random'"):
        CAMClassifier(3, "squeezenet1_1", weights_path="")
    assert CAMClassifier(3, "squeezenet1_1", weights_path="random").weights_source == "random"
    state = torchvision.models.squeezenet1_1(weights=None).state_dict()
    path = tmp_path / "squeezenet.pth"
    torch.save(state, path)
    model = CAMClassifier(3, "squeezenet1_1", weights_path=str(path))
    assert torch.equal(model.backbone[0].weight, state["features.0.weight"])


def test_cam_classifier_loads_torchvision_weights_by_name_through_its_cache(tmp_path, monkeypatch):
    import urllib.error

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    weights = torchvision.models.SqueezeNet1_1_Weights.IMAGENET1K_V1
    file = tmp_path / "torch" / "hub" / "checkpoints" / weights.url.rsplit("/", 1)[1]

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(FileNotFoundError, match=rf"squeezenet1_1 IMAGENET1K_V1 weights \({file.name}\) are not in its cache "
                       rf"{file.parent}.*Download {weights.url} .* copy it to {file.parent}"):
        CAMClassifier(3, "squeezenet1_1", weights_path="IMAGENET1K_V1")
    state = torchvision.models.squeezenet1_1(weights=None).state_dict()
    file.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, file)  # what the download would have put there
    model = CAMClassifier(3, "squeezenet1_1", weights_path="IMAGENET1K_V1")
    assert model.weights_source == "torchvision IMAGENET1K_V1"
    assert torch.equal(model.backbone[0].weight, state["features.0.weight"])
    with pytest.raises(ValueError, match="'IMAGENET1K_V3' is not a torchvision weights name of 'squeezenet1_1'"):
        CAMClassifier(3, "squeezenet1_1", weights_path="IMAGENET1K_V3")


def test_cam_classifier_errors(tmp_path):
    with pytest.raises(ValueError, match="torchvision classification model name"):
        CAMClassifier(3, "resnet5o")
    with pytest.raises(ValueError, match="not of a CNN family"):
        CAMClassifier(3, "vit_b_16")
    with pytest.raises(FileNotFoundError, match="missing.pth.* do not exist: set TRAINER.CCD.WEIGHTS"):
        CAMClassifier(3, "squeezenet1_1", weights_path=str(tmp_path / "missing.pth"))
    garbage = tmp_path / "garbage.pth"
    garbage.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="could not be read"):
        CAMClassifier(3, "squeezenet1_1", weights_path=str(garbage))
    other = tmp_path / "other.pth"
    torch.save({"weight": torch.zeros(1)}, other)
    with pytest.raises(ValueError, match="do not fit"):
        CAMClassifier(3, "squeezenet1_1", weights_path=str(other))


# ---- selection -----------------------------------------------------------------------------

def test_select_epoch_first_growing_change():
    assert select_epoch([50, 60, 65, 68, 72, 73]) == 4  # changes 10, 5, 3, 4 (> 3), 1
    assert select_epoch([50, 55, 61, 62]) == 2  # 6 > 5 at epoch 2
    assert select_epoch([50, 55, 60, 66]) == 3  # equal changes do not count
    assert select_epoch([50, 60, 65, 68]) is None  # never grows: nothing selected (yet)
    assert select_epoch([50, 60, 65, 68, 73], first=4) == 4  # the first epoch it may pick
    assert select_epoch([50, 60, 70, 68, 73], first=3) == 4  # 2 > -2 at epoch 3 is too early


def test_pseudo_label_map_positives_only_at_one():
    scores = torch.tensor([[0.9, 0.2, 0.5], [0.1, 0.8, 0.4], [0.3, 0.7, 0.6]])
    labels = torch.tensor([[1.0, 0.9, 0.99], [0.5, 1.0, 0.0], [1.0, 0.2, 0.99]])
    # class 0: positives images 0, 2 (scores 0.9, 0.3; negative 0.1) -> AP 1
    # class 1: positive image 1 (0.8) but image 2 scores 0.7 < 0.8 -> AP 1
    # class 2: no label equals 1.0 -> AP 0, kept in the mean
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the class without positives is scored 0, not left to sklearn
        assert pseudo_label_map(scores, labels) == pytest.approx(100 * 2 / 3)
    labels[1, 1], labels[2, 1] = 0.0, 1.0  # class 1 positive image 2 (0.7) ranks below image 1 (0.8)
    assert pseudo_label_map(scores, labels) == pytest.approx(100 * (1 + 0.5 + 0) / 3)


# ---- the batched update ----------------------------------------------------------------------

class TinyClassifier(nn.Module):
    """CAMs = a fixed 1x1 conv of the 4x4-pooled image: cheap, deterministic."""

    def __init__(self, num_classes):
        super().__init__()
        self.head = nn.Conv2d(3, num_classes, 1)

    def forward(self, images, return_cams=False):
        cams = self.head(F.adaptive_avg_pool2d(images, 4))
        logits = cams.mean(dim=(2, 3))
        return (logits, cams) if return_cams else logits


def tiny_setup(num_images=3, num_classes=4):
    torch.manual_seed(0)
    classifier = TinyClassifier(num_classes)
    projection = torch.randn(3 * 4 * 4, 6)

    def encode_image(images):
        return F.adaptive_avg_pool2d(images, 4).flatten(1) @ projection

    text = torch.randn(num_classes, 6)
    cls_images = torch.randn(num_images, 3, 16, 16)
    clip_images = torch.randn(num_images, 3, 8, 8)
    old = torch.rand(num_images, num_classes)
    bias = torch.rand(num_classes) * 0.5 + 0.3
    return classifier, encode_image, text, cls_images, clip_images, old, bias


def test_batched_update_equals_a_per_image_computation():
    classifier, encode_image, text, cls_images, clip_images, old, bias = tiny_setup()
    with torch.no_grad():
        scores = classifier(cls_images).sigmoid()
    threshold = float(scores.median())
    selected_rows = (scores >= threshold).sum(dim=1)
    assert selected_rows.max() > 1  # several crops for some image
    classifier.train()
    update, selected = cam_label_update(classifier, cls_images, clip_images, encode_image, text, old, bias, threshold,
                                        logit_scale=10.0, grow=1.0, grow_ref=8.0)
    assert classifier.training  # mode restored
    expected = []
    for i in range(cls_images.shape[0]):
        with torch.no_grad():
            logits, cams = classifier(cls_images[i : i + 1], return_cams=True)
        best = torch.zeros(1, text.shape[0])
        for c in range(text.shape[0]):
            if logits[0, c].sigmoid() >= threshold:
                box = cam_boxes(cams[0, c : c + 1], (8, 8), grow=1.0, grow_ref=8.0)
                crop = crop_resize(clip_images[i : i + 1], box, torch.tensor([0]), (8, 8))
                best = torch.maximum(best, clip_probs(encode_image(crop), text, 10.0))
        expected.append((0.2 * old[i] + 0.8 * best.clamp_min(0.05) / bias).clamp(0, 1))
    assert torch.allclose(update.labels, torch.cat(expected), atol=1e-6)
    assert selected.sum(dim=1).tolist() == selected_rows.tolist()
    # the two-step form: every class's box from one classifier pass, then the selected crops
    scores, boxes = cam_candidates(classifier, cls_images, (8, 8), grow=1.0, grow_ref=8.0)
    image_index, class_index = (scores >= threshold).nonzero(as_tuple=True)
    two_step = crops_update(clip_images, boxes[image_index, class_index], image_index, encode_image, text, old, bias,
                            logit_scale=10.0)
    assert torch.allclose(two_step.labels, update.labels, atol=1e-6)


def test_update_without_selected_classes_and_with_jittered_crops():
    classifier, encode_image, text, cls_images, clip_images, old, bias = tiny_setup()
    none, selected = cam_label_update(classifier, cls_images, clip_images, encode_image, text, old, bias, 1.5)
    assert not selected.any()
    assert torch.allclose(none.labels, (0.2 * old + 0.8 * 0.05 / bias).clamp(0, 1))
    args = (classifier, cls_images, clip_images, encode_image, text, old, bias, 0.0)
    one, _ = cam_label_update(*args)
    several, _ = cam_label_update(*args, crops_per_class=3, jitter=0.3, generator=torch.Generator().manual_seed(1))
    assert bool((several.crop_max >= one.crop_max - 1e-6).all())  # the box itself is among the crops
    assert not torch.allclose(several.crop_max, one.crop_max)


def test_cdul_initial_labels_shape_and_rule():
    _, encode_image, text, _, clip_images, _, _ = tiny_setup()
    labels = cdul_initial_labels(encode_image, clip_images, text, grid=2, zeta=0.3, logit_scale=10.0)
    global_probs = clip_probs(encode_image(clip_images), text, 10.0)
    tiles = []
    for x, y in [(0, 0), (4, 0), (0, 4), (4, 4)]:  # row by row
        box = torch.tensor([[x, y, x + 4, y + 4]], dtype=torch.float32).repeat(3, 1)
        tile = crop_resize(clip_images, box, torch.arange(3), (8, 8))
        tiles.append(clip_probs(encode_image(tile), text, 10.0))
    tiles = torch.stack(tiles, dim=1)
    assert torch.allclose(labels, cdul_aggregate(global_probs, tiles, zeta=0.3), atol=1e-6)


# ---- edge values the tests above leave open ---------------------------------------------

def test_unreliable_means_entropy_strictly_above_the_limit():
    probs = torch.tensor([[0.5, 0.25, 0.25]])
    limit = -(probs * probs.log()).sum().item()
    assert not unreliable(probs, max_entropy=limit)[0] and unreliable(probs, max_entropy=limit - 1e-4)[0]


def test_cdul_takes_the_tiles_max_when_it_reaches_zeta():
    tiles = torch.tensor([[[0.5], [0.1]]])  # alpha = zeta = 0.5, beta = 0.1
    assert torch.allclose(cdul_aggregate(torch.tensor([[0.3]]), tiles, zeta=0.5), torch.tensor([[(0.3 + 0.5) / 2]]))


def test_assume_negative_ls_targets_where_the_logit_is_not_zero():
    logits = torch.tensor([[-math.log(3.0), math.log(3.0)]])  # sigmoid 0.25, 0.75
    positives = torch.tensor([[0.0, 1.0]])
    # class 0 target 0.1 at 0.25, class 1 target 0.9 at 0.75: the same loss
    expected = -(0.1 * math.log(0.25) + 0.9 * math.log(0.75))
    assert assume_negative_ls_loss(logits, positives, smoothing=0.1).item() == pytest.approx(expected, rel=1e-5)


def test_role_loss_on_two_images_against_its_formula():
    logits = torch.tensor([[0.5, -1.0, 2.0], [-0.3, 0.8, 0.1]])
    estimate_logits = torch.tensor([[1.5, -0.5, 0.7], [0.2, -1.2, 1.1]])
    positives = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    f, y = logits.sigmoid(), estimate_logits.sigmoid()

    def bce(p, t):
        return -(t * p.log() + (1 - t) * (1 - p).log())

    def penalty(p):
        return (p.sum(dim=1).mean() - 1.5) ** 2 / 9

    observed = (positives * (-f.log() - y.log())).mean()
    cross = (bce(f, y) + bce(y, f)).mean()
    expected = 0.5 * (observed + cross + penalty(f) + penalty(y))
    assert role_loss(logits, estimate_logits, positives, expected_num_pos=1.5).item() == pytest.approx(
        expected.item(), rel=1e-5
    )


def test_label_estimator_initialisation_is_seeded():
    positives = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    first, again, other = LabelEstimator(positives), LabelEstimator(positives), LabelEstimator(positives, seed=1)
    assert torch.equal(first.logits, again.logits) and not torch.equal(first.logits, other.logits)


def test_clip_probs_normalise_each_class_text_and_class_bias_needs_an_image():
    image, text = torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 1.0], [0.0, 2.0]])  # cos 1/sqrt2 and 0
    expected = torch.tensor([math.exp(3.0 / math.sqrt(2.0)), 1.0])
    assert torch.allclose(clip_probs(image, text, logit_scale=3.0)[0], expected / expected.sum())
    with pytest.raises(ValueError, match=r"class_bias: no \(reliable\) image to estimate CLIP's class bias from"):
        class_bias(torch.tensor([[0.6, 0.4]]), torch.tensor([False]))


# ---- the release's geometry and calibration (keys CALIBRATION, CROPS, CLIP_SIZE) -----------

def test_the_released_walk_checks_every_100_images_the_first_window_holding_101():
    from leclip.multilabel.cam import calibrate_threshold_walk

    # class j scores 0.0505 + 0.001 j: at t = 0.05 + 0.001 k exactly 10 - k classes pass
    scores = (0.0505 + 0.001 * torch.arange(10.0)).expand(601, 10)
    # windows k = 0, 1, ...: 10.1 (101 images / 100), 9, 8, 7, 6, 5 -> lands at k = 5
    threshold, mean = calibrate_threshold_walk(scores, bound=4, generator=torch.Generator().manual_seed(0))
    assert threshold == pytest.approx(0.055) and mean == 5
    # 10.1 lands only because the first window holds 101 images (100 would give 10.0)
    assert calibrate_threshold_walk(scores, bound=10.05)[0] == 0.05
    # 401 images: 4 windows, none lands: the walk's last threshold (0.054), with a warning
    with pytest.warns(UserWarning, match="4 windows of 100"):
        assert calibrate_threshold_walk(scores[:401], bound=4)[0] == pytest.approx(0.054)


def test_the_walk_reads_the_images_in_the_generators_random_order():
    from leclip.multilabel.cam import calibrate_threshold_walk

    # 200 images pass 5 classes at any t <= 0.06, 101 pass none: the first window decides
    scores = torch.cat([torch.full((200, 5), 0.06), torch.zeros(101, 5)])
    for seed in (3, 4):
        order = torch.randperm(301, generator=torch.Generator().manual_seed(seed))
        first = 5 * int((order[:101] < 200).sum()) / 100  # the first window's mean count
        threshold, mean = calibrate_threshold_walk(scores, bound=first - 0.5, generator=torch.Generator().manual_seed(seed))
        assert (threshold, mean) == (0.05, pytest.approx(first))


def test_aspect_crops_keep_the_boxes_shape_at_the_long_side():
    from leclip.multilabel.label_update import aspect_sizes, cut_crops

    boxes = torch.tensor([[0.0, 0.0, 100.0, 50.0], [10.0, 20.0, 40.0, 110.0]])
    assert aspect_sizes(boxes, 640).tolist() == [[320, 640], [640, 213]]  # (h, w), truncated as released
    images = torch.randn(1, 3, 120, 120)
    crops, index = cut_crops(images, boxes, torch.tensor([0, 0]), long_side=64)
    assert [tuple(c.shape) for c in crops] == [(3, 32, 64), (3, 64, 21)] and index.tolist() == [0, 0]
    # each crop is the box read by roi_align at its own size
    assert torch.allclose(crops[1], crop_resize(images, boxes[1:], torch.tensor([0]), (64, 21))[0])


@pytest.mark.parametrize("layers", [2, (1, 1, 1, 1)])
def test_clip_encodes_any_size_with_bilinearly_resampled_positions(layers):
    import copy

    from leclip.backbone.loader import random_clip
    from leclip.multilabel.any_size import encode_any_size, resample_positions

    torch.manual_seed(0)
    model = random_clip(image_resolution=64, vision_layers=layers, vision_width=64, vision_patch_size=16).eval()
    native = torch.randn(2, 3, 64, 64)
    assert torch.equal(encode_any_size(model, native), model.encode_image(native))
    wide = torch.randn(2, 3, 64, 96)  # a 4 x 6 patch grid (ViT) or a 2 x 3 feature map (ResNet)
    grid = (4, 6) if layers == 2 else (2, 3)
    name = "positional_embedding" if layers == 2 else "attnpool.positional_embedding"
    resized = copy.deepcopy(model)
    old = resized.visual.get_parameter(name)
    new = resample_positions(old.detach(), grid)
    # the first row (class / mean token) is kept; the grid is resized bilinearly
    side = round((old.shape[0] - 1) ** 0.5)
    square = old.detach()[1:].t().reshape(1, -1, side, side)
    by_hand = F.interpolate(square, size=grid, mode="bilinear", align_corners=False).reshape(old.shape[1], -1).t()
    assert torch.equal(new[0], old[0]) and torch.allclose(new[1:], by_hand)
    module, _, attr = ("visual." + name).rpartition(".")
    setattr(resized.get_submodule(module), attr, nn.Parameter(new))
    assert torch.allclose(encode_any_size(model, wide), resized.encode_image(wide), atol=1e-5)
    assert torch.equal(model.visual.get_parameter(name), old)  # the model itself is unchanged
