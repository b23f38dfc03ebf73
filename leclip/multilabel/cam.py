"""CCD's classifier and its class activation maps (CAMs) -> boxes -> crops, batched.

`CAMClassifier`: a torchvision CNN's feature map -> 1x1 conv (one CAM per class) ->
global average pool = logits, as released (ResNet-50 there; here any torchvision CNN by
name). As released, positive CAM values are multiplied by `cam_coeff` (3) inside the
model from the first step on, so training, evaluation and the boxes all see it.

Boxes, for the selected (image, class) pairs: the CAM upsampled (bilinear) to the image,
min-max normalised, pixels above 0.95, then
- `rule="bbox"` (ours, default): the bounding box of all those pixels;
- `rule="released"`: the released rule, first and last such pixel in row-major order
  (rows from the first to the last hit; columns between those two pixels' columns only,
  half-open end as the released slicing);
grown by `grow` px per side at a `grow_ref` px image (80 at 640 as released, scaled with
the image size), clipped to the image. A CAM without any pixel above the threshold (a
constant map) gives the whole image (ours; the released code fails there).
Crops of all pairs are cut and resized in one `roi_align` call.
"""
import math
import typing
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from torchvision.ops import roi_align

from . import classifier_weights

# how to take the feature map (before pooling and classifier) of each torchvision family
_TRUNKS = (
    ((torchvision.models.ResNet, torchvision.models.RegNet), lambda m: nn.Sequential(*list(m.children())[:-2])),
    ((torchvision.models.DenseNet,), lambda m: nn.Sequential(m.features, nn.ReLU())),  # its forward applies the ReLU
    (
        (torchvision.models.ShuffleNetV2,),
        lambda m: nn.Sequential(m.conv1, m.maxpool, m.stage2, m.stage3, m.stage4, m.conv5),
    ),
    ((torchvision.models.MNASNet,), lambda m: m.layers),
    (
        (
            torchvision.models.VGG,
            torchvision.models.AlexNet,
            torchvision.models.MobileNetV2,
            torchvision.models.MobileNetV3,
            torchvision.models.EfficientNet,
            torchvision.models.ConvNeXt,
            torchvision.models.SqueezeNet,
        ),
        lambda m: m.features,
    ),
)


def classification_models():
    return torchvision.models.list_models(module=torchvision.models)


def build_trunk(name, weights="IMAGENET1K_V1"):
    """(feature extractor, number of channels, where its weights came from) of torchvision
    CNN `name`, its weights from `classifier_weights.load_into` (a weights enum name
    through torchvision's cache, a state dict's path, a registered name, or `random`)."""
    if name not in classification_models():
        raise ValueError(
            f"Unknown classifier backbone {name!r}: use a torchvision classification model name, "
            f"one of {', '.join(classification_models())}"
        )
    # the builder's return annotation names the family, so a ViT is refused before it is built
    family = typing.get_type_hints(torchvision.models.get_model_builder(name)).get("return", object)
    take = next((take for families, take in _TRUNKS if issubclass(family, families)), None)
    if take is None:
        raise ValueError(
            f"Classifier backbone {name!r} is not of a CNN family whose feature map CAMClassifier "
            "takes: use resnet*, resnext*, wide_resnet*, regnet*, densenet*, vgg*, mobilenet*, "
            "efficientnet*, convnext*, shufflenet*, mnasnet*, squeezenet* or alexnet"
        )
    model = torchvision.models.get_model(name, weights=None)
    trunk = take(model)
    source = classifier_weights.load_into(model, trunk, name, weights)
    trunk.eval()  # the probe must not touch batch-norm statistics
    with torch.no_grad():
        channels = trunk(torch.zeros(1, 3, 64, 64)).shape[1]
    return trunk.train(), channels, source


class CAMClassifier(nn.Module):
    """torchvision CNN -> 1x1 conv (one CAM per class) -> global average pool -> logits."""

    def __init__(self, num_classes, backbone="resnet50", weights_path="IMAGENET1K_V1", cam_coeff=3.0):
        super().__init__()
        self.backbone, channels, self.weights_source = build_trunk(backbone, weights_path)
        self.head = nn.Conv2d(channels, num_classes, kernel_size=1)
        self.cam_coeff = float(cam_coeff)
        # channels-last convolutions: the same outputs (to float rounding), faster on the
        # CPU (measured 8-30%) and on CUDA's tensor cores
        self.to(memory_format=torch.channels_last)

    def forward(self, images, return_cams=False):
        # the maps come back in the usual layout for the boxes and figures
        cams = self.head(self.backbone(images.contiguous(memory_format=torch.channels_last))).contiguous()
        cams = torch.where(cams > 0, cams * self.cam_coeff, cams)
        logits = cams.mean(dim=(2, 3))
        return (logits, cams) if return_cams else logits

    def param_groups(self, lr, head_lr_mult=10.0):
        """Optimizer groups as released: backbone at lr, the 1x1 conv at 10x lr."""
        return [
            {"params": list(self.backbone.parameters()), "lr": lr},
            {"params": list(self.head.parameters()), "lr": lr * head_lr_mult},
        ]


def normalise_cams(cams, eps=1e-5):
    """(cam - min) / (max - min + eps) over the last two dims (eps 1e-5 as released)."""
    low = cams.amin(dim=(-2, -1), keepdim=True)
    high = cams.amax(dim=(-2, -1), keepdim=True)
    return (cams - low) / (high - low + eps)


BOX_RULES = ("bbox", "released")


def _first_true(mask):
    """Index of the first True along the last dim (0 where there is none)."""
    return mask.to(torch.uint8).argmax(dim=-1)


def _last_true(mask):
    return mask.shape[-1] - 1 - _first_true(mask.flip(-1))


def cam_boxes(cams, size, threshold=0.95, rule="bbox", grow=80.0, grow_ref=640.0, chunk=256):
    """Boxes [K, 4] (x1, y1, x2, y2), pixel edges of a `size` = (H, W) image, from the
    selected CAMs [K, h, w] (see the module docstring for the rules), upsampled `chunk`
    maps at a time to bound the memory."""
    if rule not in BOX_RULES:
        raise ValueError(f"Box rule {rule!r}: use one of {BOX_RULES}")
    return torch.cat([_cam_boxes(part, size, threshold, rule, grow, grow_ref) for part in cams.split(chunk)])


def cam_maps(cams, size):
    """The CAMs [K, h, w] upsampled (bilinear) to `size` = (H, W) and min-max normalised
    -> [K, H, W]: the maps whose hot pixels make the boxes."""
    maps = F.interpolate(cams[:, None].float(), size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
    return normalise_cams(maps)


def _cam_boxes(cams, size, threshold, rule, grow, grow_ref):
    height, width = size
    maps = cam_maps(cams, size)
    hot = maps > threshold
    if rule == "bbox":
        rows, cols = hot.any(dim=2), hot.any(dim=1)
        y1, y2 = _first_true(rows), _last_true(rows) + 1
        x1, x2 = _first_true(cols), _last_true(cols) + 1
    else:
        flat = hot.flatten(1)
        first, last = _first_true(flat), _last_true(flat)
        y1, y2 = first // width, last // width
        x1 = torch.minimum(first % width, last % width)
        x2 = torch.maximum(first % width, last % width)
    boxes = torch.stack([x1, y1, x2, y2], dim=1).to(maps.dtype)
    whole = maps.new_tensor([0.0, 0.0, width, height])
    boxes = torch.where(hot.flatten(1).any(dim=1, keepdim=True), boxes, whole)
    gx, gy = grow * width / grow_ref, grow * height / grow_ref
    boxes = boxes + maps.new_tensor([-gx, -gy, gx, gy])
    return clip_boxes(boxes, size)


def clip_boxes(boxes, size):
    height, width = size
    x = boxes[:, 0::2].clamp(0, width)
    y = boxes[:, 1::2].clamp(0, height)
    return torch.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], dim=1)


def jitter_boxes(boxes, image_index, num_crops, size, jitter=0.1, generator=None):
    """`num_crops` boxes per box: the box itself, then num_crops - 1 boxes whose edges each
    move by U(-jitter, jitter) x the box's side, clipped to the image (ours: the
    "random sampling near boxes" of the paper's slides). Returns (boxes, image_index),
    grouped per original box."""
    if num_crops < 1:
        raise ValueError(f"num_crops={num_crops}: need at least 1 crop per box")
    boxes = boxes.repeat_interleave(num_crops, dim=0)
    image_index = image_index.repeat_interleave(num_crops)
    if num_crops == 1:
        return boxes, image_index
    sides = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)
    noise = torch.rand(boxes.shape, generator=generator, device="cpu").to(boxes.device, boxes.dtype)
    noise[::num_crops] = 0.5  # the first of each group is the box itself
    moved = boxes + (2.0 * noise - 1.0) * jitter * sides
    ordered = torch.cat([torch.minimum(moved[:, :2], moved[:, 2:]), torch.maximum(moved[:, :2], moved[:, 2:])], dim=1)
    return clip_boxes(ordered, size), image_index


def crop_resize(images, boxes, image_index, out_size, sampling_ratio=1):
    """All crops [K, 3, *out_size] in one roi_align: box k of image image_index[k].

    aligned=True with one sample per output pixel reads the same points as the released
    bilinear `F.interpolate(crop, out_size, align_corners=False)`; the two differ only on
    the outermost output pixels of an upsampled crop (F.interpolate clamps at the crop's
    edge, roi_align interpolates with the neighbouring image pixel)."""
    rois = torch.cat([image_index[:, None].to(boxes.dtype), boxes], dim=1)
    return roi_align(
        images, rois, output_size=tuple(out_size), spatial_scale=1.0, sampling_ratio=sampling_ratio, aligned=True
    )


def calibrate_threshold(scores, bound=4, start=0.05, step=0.001):
    """(threshold, mean count): one class-selection threshold for all classes, as released:
    the first t = start + k * step (k = 0, 1, ...) with bound < mean number of classes per
    image with score >= t < bound + 2.

    scores [N, C]: the classifier's sigmoid outputs. All steps are judged at once on the
    whole matrix (ours: the released code judges each step on a new window of 100 random
    images, one step after the other). If no step lands in the window (the mean count
    jumps over it, or is already <= bound at `start`) we take the step whose mean count is
    nearest bound + 1 and warn (ours; the released loop keeps raising to its end)."""
    flat = scores.detach().flatten().float().sort().values
    steps = max(0, math.ceil((float(flat[-1]) - start) / step)) + 2  # until no score passes
    thresholds = (start + step * torch.arange(steps, dtype=torch.float64)).to(flat.dtype).to(flat.device)
    passing = flat.numel() - torch.searchsorted(flat, thresholds, right=False)
    mean_count = passing.double() / scores.shape[0]
    inside = (mean_count > bound) & (mean_count < bound + 2)
    if bool(inside.any()):
        k = int(_first_true(inside))
    else:
        k = int((mean_count - (bound + 1)).abs().argmin())
        warnings.warn(
            f"calibrate_threshold: no threshold from {start} in steps of {step} gives {bound} < mean "
            f"selected classes < {bound + 2}; using {float(thresholds[k]):.3f} ({float(mean_count[k]):.2f} per image)",
            stacklevel=2,
        )
    return start + step * k, float(mean_count[k])


CALIBRATIONS = ("all", "walk")


def calibrate_threshold_walk(scores, bound=4, start=0.05, step=0.001, window=100, generator=None):
    """(threshold, mean count of the window that fixed it): the released walk. The images
    in a random order (`generator`); one threshold t from `start`; each image adds its
    number of classes with score >= t, divided by `window`; after the first window + 1
    images, then after every further `window` images, that sum is checked: inside
    (bound, bound + 2) it stops, otherwise t rises by `step` and the sum restarts. Images
    left after the last check are not read; running out keeps the last t (so t is at most
    start + step * (N - 1) // window: 0.107 on VOC2012's 5717 training images)."""
    order = torch.randperm(scores.shape[0], generator=generator)
    ordered = scores.detach().float().cpu()[order]
    threshold, begin, checks = start, 0, (scores.shape[0] - 1) // window
    for k in range(checks):
        end = (k + 1) * window + 1  # the release checks at image index 100, 200, ...
        mean_count = float((ordered[begin:end] >= threshold).sum()) / window
        if bound < mean_count < bound + 2:
            return threshold, mean_count
        threshold, begin = start + step * (k + 1), end
    warnings.warn(
        f"calibrate_threshold_walk: {scores.shape[0]} images gave {checks} windows of {window} and none landed in "
        f"({bound}, {bound + 2}) classes per image; keeping the walk's last threshold {threshold:.3f} (as released)",
        stacklevel=2,
    )
    return threshold, float((ordered >= threshold).sum()) / max(scores.shape[0], 1)
