"""The CLIP label passes of CCD and of the CDUL baseline, one batch at a time.

Pure functions: the models, the text features and CLIP's image encoder (any callable
images -> features, e.g. `clip_model.encode_image`) are arguments; every tensor stays
on the device it comes on. Two views of the same images come in: the classifier's input
and CLIP's input (both of the whole image, unflipped, uncropped: boxes are found on the
first and cut from the second, in relative position). The released code feeds one
640 px ImageNet-normalised view to both; the views are the trainer's choice.

`cam_label_update` is CCD's update, batched: one classifier forward for the batch,
the boxes of every selected (image, class) pair, all crops in one roi_align, CLIP on the
crops in chunks, the element-wise max of each image's crops, floor, debias, blend. The
released code does the same one image, one class and one crop at a time. Split in two
for a trainer that keeps one classifier pass for both the threshold calibration and the
update: `cam_candidates` (scores and every class's box), then `crops_update` on the
selected pairs. `cut_crops` is the update's crop step alone, which `--viz` draws.
"""
from dataclasses import dataclass

import torch

from .cam import cam_boxes, cam_maps, crop_resize, jitter_boxes
from .clip_labels import blend_update, cdul_aggregate, clip_probs, grid_boxes


@torch.no_grad()
def clip_image_probs(encode_image, images, text_features, logit_scale=100.0, batch_size=64):
    """CLIP softmax over the classes [N, C] of `images`, encoded `batch_size` at a time."""
    if images.shape[0] == 0:
        return text_features.new_zeros(0, text_features.shape[0]).float()
    features = torch.cat([encode_image(chunk) for chunk in images.split(batch_size)])
    return clip_probs(features, text_features, logit_scale)


@torch.no_grad()
def classifier_outputs(classifier, images, return_cams=False):
    """The classifier in eval mode (as released: the label passes follow an evaluation),
    its previous mode restored. Returns the logits, or (logits, cams)."""
    was_training = classifier.training
    classifier.eval()
    try:
        return classifier(images, return_cams=return_cams)
    finally:
        classifier.train(was_training)


@torch.no_grad()
def cdul_initial_labels(encode_image, images, text_features, grid=3, zeta=0.5, logit_scale=100.0, batch_size=64):
    """CDUL's initial labels [N, C]: CLIP on the whole image and on its grid x grid
    tiles (each resized to the image's size, i.e. CLIP's input), aggregated by
    `cdul_aggregate`."""
    num_images, height, width = images.shape[0], images.shape[-2], images.shape[-1]
    global_probs = clip_image_probs(encode_image, images, text_features, logit_scale, batch_size)
    tiles = grid_boxes(height, width, grid).to(images.device, images.dtype)
    boxes = tiles.repeat(num_images, 1)
    image_index = torch.arange(num_images, device=images.device).repeat_interleave(tiles.shape[0])
    crops = crop_resize(images, boxes, image_index, (height, width))
    tile_probs = clip_image_probs(encode_image, crops, text_features, logit_scale, batch_size)
    return cdul_aggregate(global_probs, tile_probs.view(num_images, tiles.shape[0], -1), zeta)


@dataclass
class LabelUpdate:
    labels: torch.Tensor  # [B, C] the new pseudo-labels
    crop_max: torch.Tensor  # [B, C] element-wise max of CLIP's softmax over each image's crops (0: no crop)


@torch.no_grad()
def cam_candidates(classifier, classifier_images, box_size, cam_threshold=0.95, box_rule="bbox", grow=80.0,
                   grow_ref=640.0, return_maps=False):
    """(scores [B, C], boxes [B, C, 4]) from one classifier forward: the sigmoid scores
    the class selection is calibrated on, and the box of every class, in pixels of a
    `box_size` = (H, W) image (the CLIP view). Lets a trainer run the classifier once over
    the training set for both the calibration and the update (the released code runs it
    once for its calibration windows and again for the update). `return_maps` adds the
    maps [B, C, H, W] the boxes come from (`cam_maps`), for a few images (figures)."""
    logits, cams = classifier_outputs(classifier, classifier_images, return_cams=True)
    boxes = cam_boxes(cams.flatten(0, 1), box_size, cam_threshold, box_rule, grow, grow_ref)
    scores, boxes = logits.float().sigmoid(), boxes.view(*logits.shape, 4)
    if not return_maps:
        return scores, boxes
    return scores, boxes, cam_maps(cams.flatten(0, 1), box_size).view(*logits.shape, *box_size)


def aspect_sizes(boxes, long_side):
    """[K, 2] (h, w) of crops of `boxes` [K, 4] resized to a long side of `long_side` px at
    their own aspect, truncated to whole pixels as released."""
    sides = (boxes[:, 2:] - boxes[:, :2]).double().clamp_min(1.0)  # (w, h), in float64 as the release's Python floats
    scale = long_side / sides.amax(dim=1, keepdim=True)
    return (sides.flip(1) * scale).long().clamp_min(1)


def cut_crops(clip_images, boxes, image_index, crop_size=None, crops_per_class=1, jitter=0.1, generator=None,
              long_side=None):
    """(crops, their image index): `crops_per_class` crops per box (`jitter_boxes`: the box
    itself first), cut from `clip_images` and resized in roi_align: square crops
    [K * crops_per_class, 3, *crop_size] (default: the CLIP view's own size) in one call,
    or with `long_side` (as released) a list of crops [3, h, w], each at its box's aspect."""
    size = tuple(clip_images.shape[-2:])
    boxes, crop_image = jitter_boxes(boxes.to(clip_images.dtype), image_index, crops_per_class, size, jitter, generator)
    if long_side is None:
        return crop_resize(clip_images, boxes, crop_image, crop_size or size), crop_image
    sizes = aspect_sizes(boxes, long_side).tolist()
    crops = [crop_resize(clip_images, box[None], k[None], hw)[0] for box, k, hw in zip(boxes, crop_image, sizes)]
    return crops, crop_image


def crop_probs(encode_image, crops, text_features, logit_scale=100.0, batch_size=64):
    """CLIP's softmax [K, C] of square crops (a tensor, in batches) or of crops of their own
    shapes (a list, one at a time as released)."""
    if isinstance(crops, torch.Tensor):
        return clip_image_probs(encode_image, crops, text_features, logit_scale, batch_size)
    if not crops:
        return text_features.new_zeros(0, text_features.shape[0]).float()
    features = torch.cat([encode_image(crop[None]) for crop in crops])
    return clip_probs(features, text_features, logit_scale)


@torch.no_grad()
def crops_update(
    clip_images,
    boxes,
    image_index,
    encode_image,
    text_features,
    old_labels,
    bias,
    ratio=0.2,
    ls_coeff=20.0,
    clamp_local=False,
    crops_per_class=1,
    jitter=0.1,
    generator=None,
    crop_size=None,
    logit_scale=100.0,
    clip_batch_size=64,
    long_side=None,
):
    """The CLIP side of the update -> LabelUpdate. boxes [K, 4] of the selected (image,
    class) pairs, image_index [K] their images in the batch. Each box gives
    `crops_per_class` crops (`jitter_boxes`), cut from `clip_images` and resized to
    `crop_size` (default: the CLIP view's own size, CLIP's input resolution) in one
    roi_align; CLIP scores them `clip_batch_size` at a time; the max over each image's
    crops starts from zeros, as released (an image without any selected class gets 0);
    new labels = `blend_update(old_labels, crop_max, bias, ratio, ls_coeff, clamp_local)`.
    `long_side` (as released): crops at their box's aspect, long side `long_side`, scored
    one at a time (`encode_image` must then take any size: `any_size.encode_any_size`)."""
    crops, crop_image = cut_crops(clip_images, boxes, image_index, crop_size, crops_per_class, jitter, generator,
                                  long_side)
    probs = crop_probs(encode_image, crops, text_features, logit_scale, clip_batch_size)
    rows = crop_image[:, None].expand(-1, old_labels.shape[1])
    crop_max = old_labels.new_zeros(old_labels.shape).scatter_reduce_(0, rows, probs.to(old_labels.dtype), "amax")
    labels = blend_update(old_labels, crop_max, bias, ratio, ls_coeff, clamp_local)
    return LabelUpdate(labels=labels, crop_max=crop_max)


@torch.no_grad()
def cam_label_update(
    classifier,
    classifier_images,
    clip_images,
    encode_image,
    text_features,
    old_labels,
    bias,
    threshold,
    cam_threshold=0.95,
    box_rule="bbox",
    grow=80.0,
    grow_ref=640.0,
    **crop_options,
):
    """CCD's CAM-guided label update of one batch -> (LabelUpdate, selected [B, C] bool).

    One classifier forward; the classes with sigmoid(logit) >= threshold (from
    `calibrate_threshold`) are selected, their boxes found (`cam_boxes`, in pixels of the
    CLIP view) and `crops_update` (its keyword options in `crop_options`) does the rest.
    Defaults as released except `box_rule` (ours; "released" reproduces the released box)
    and the crops' square shape (ours; `long_side=640` in `crop_options` keeps each crop's
    aspect as released)."""
    logits, cams = classifier_outputs(classifier, classifier_images, return_cams=True)
    selected = logits.float().sigmoid() >= threshold
    image_index, class_index = selected.nonzero(as_tuple=True)
    size = tuple(clip_images.shape[-2:])
    boxes = cam_boxes(cams[image_index, class_index], size, cam_threshold, box_rule, grow, grow_ref)
    update = crops_update(
        clip_images, boxes, image_index, encode_image, text_features, old_labels, bias, **crop_options
    )
    return update, selected
