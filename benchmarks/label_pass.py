"""Throughput of CCD's label-update pass: batched (leclip) vs one image at a time (released style).

    python benchmarks/label_pass.py [--clip synth-vit|vitb16] [--classifier resnet18]
                                    [--images 16] [--batch 16] [--box-rule released|bbox]
                                    [--repeats 3] [--threads N]

Both passes run on the same random images, the same random-weight torchvision classifier
and the same CLIP: `synth-vit` (the shipped embedded model, 64 px; classifier at 128 px)
or `vitb16` (a random CLIP of ViT-B/16's shape: 224 px, patch 16, width 768, 12 blocks,
text width 512, 77 tokens; classifier at 448 px, as the released training size). The
released-style pass follows the released control flow: per image one classifier forward
at batch 1, per selected class its own CAM upsampling, normalisation, `nonzero` box and
crop, and one CLIP forward per crop. Its crops use the batched pass's resampling kernel
(roi_align, which matches the released bilinear resize except on the outermost pixels of
upsampled crops) so that the two passes' labels can be compared exactly. The two passes
run in turns (`--repeats` times each, the best counts). It prints images/s of each pass,
the ratio and the largest label difference.
CUDA is used where available, else the CPU.
"""
import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from leclip.backbone import class_text_features, load_clip, random_clip  # noqa: E402
from leclip.multilabel.cam import CAMClassifier, calibrate_threshold  # noqa: E402
from leclip.multilabel.clip_labels import class_bias, clip_probs, debias, unreliable  # noqa: E402
from leclip.multilabel.label_update import cam_label_update, classifier_outputs, clip_image_probs  # noqa: E402

VITB16 = dict(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768, vision_patch_size=16,
              context_length=77, transformer_width=512, transformer_heads=8, transformer_layers=12)
SETTINGS = {  # CLIP, classifier input size, number of classes
    "synth-vit": (lambda: load_clip("synth-vit"), 128, 16),
    "vitb16": (lambda: random_clip(**VITB16), 448, 20),
}
GROW, GROW_REF, CAM_THRESHOLD, RATIO, LS_COEFF = 80.0, 640.0, 0.95, 0.2, 20.0


@torch.no_grad()
def released_style_pass(classifier, cls_images, clip_images, encode_image, text, old_labels, bias, threshold, box_rule):
    """One image, one class, one crop and one CLIP forward at a time."""
    classifier.eval()
    height, width = clip_images.shape[-2:]
    gy, gx = GROW * height / GROW_REF, GROW * width / GROW_REF
    new_labels = []
    for i in range(cls_images.shape[0]):
        logits, cams = classifier(cls_images[i : i + 1], return_cams=True)
        local = torch.zeros_like(old_labels[i : i + 1])
        for c in (logits[0].sigmoid() >= threshold).nonzero()[:, 0].tolist():
            cam = F.interpolate(cams[:, c : c + 1], (height, width), mode="bilinear", align_corners=False)
            cam = (cam - cam.min()) / (cam.max() - cam.min() + 1e-5)
            hits = (cam > CAM_THRESHOLD).nonzero()[:, 2:]  # (y, x) in row-major order
            if len(hits) == 0:  # a constant map: the whole image, as the batched pass (the release fails)
                y1, x1, y2, x2 = 0, 0, height, width
            elif box_rule == "released":
                (y1, xa), (y2, xb) = hits[0].tolist(), hits[-1].tolist()
                x1, x2 = min(xa, xb), max(xa, xb)
            else:
                y1, x1 = hits.min(dim=0).values.tolist()
                y2, x2 = (hits.max(dim=0).values + 1).tolist()
            box = [max(x1 - gx, 0), max(y1 - gy, 0), min(x2 + gx, width), min(y2 + gy, height)]
            roi = torch.tensor([[0.0] + box], device=clip_images.device)
            crop = roi_align(clip_images[i : i + 1], roi, (height, width), 1.0, 1, True)
            local = torch.cat([local, clip_probs(encode_image(crop), text)]).amax(dim=0, keepdim=True)
        local = local.clamp_min(1.0 / LS_COEFF) / bias
        new_labels.append((RATIO * old_labels[i : i + 1] + (1 - RATIO) * local).clamp(0, 1))
    return torch.cat(new_labels)


def batched_pass(classifier, cls_images, clip_images, encode_image, text, old_labels, bias, threshold, box_rule, batch):
    return torch.cat([
        cam_label_update(
            classifier, cls_images[s : s + batch], clip_images[s : s + batch], encode_image, text,
            old_labels[s : s + batch], bias, threshold, ratio=RATIO, ls_coeff=LS_COEFF, cam_threshold=CAM_THRESHOLD,
            box_rule=box_rule, grow=GROW, grow_ref=GROW_REF, clip_batch_size=4 * batch,
        )[0].labels
        for s in range(0, cls_images.shape[0], batch)
    ])


def alternate_times(fns, device, repeats):
    """(outputs, best wall time of each of `fns`): the functions run in turns, `repeats`
    times, so a shared machine's load falls on both alike; the best run is the least
    disturbed."""
    times, outputs = [[] for _ in fns], [None] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            outputs[i] = fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[i].append(time.perf_counter() - start)
    return outputs, [min(t) for t in times]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clip", choices=sorted(SETTINGS), default="synth-vit")
    parser.add_argument("--classifier", default="resnet18", help="torchvision CNN name (random weights)")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--box-rule", choices=("released", "bbox"), default="released")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each pass; the best counts")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)

    build_clip, cls_size, num_classes = SETTINGS[args.clip]
    clip_model = build_clip().to(device)
    clip_size = clip_model.visual.input_resolution
    classifier = CAMClassifier(num_classes, args.classifier, weights_path="random").to(device).eval()  # timing only
    text = class_text_features(clip_model, [f"class {c}" for c in range(num_classes)], device=device)
    encode = clip_model.encode_image

    cls_images = torch.randn(args.images, 3, cls_size, cls_size, device=device)
    clip_images = F.interpolate(cls_images, (clip_size, clip_size), mode="bilinear", align_corners=False)
    probs = clip_image_probs(encode, clip_images, text)
    bias = class_bias(probs, ~unreliable(probs)) if bool((~unreliable(probs)).any()) else class_bias(probs)
    old = debias(probs, bias, LS_COEFF)
    scores = torch.cat([classifier_outputs(classifier, chunk).sigmoid() for chunk in cls_images.split(args.batch)])
    threshold, mean_count = calibrate_threshold(scores)

    def inputs(n):  # the first n images and their labels
        return classifier, cls_images[:n], clip_images[:n], encode, text, old[:n], bias, threshold, args.box_rule

    batched_pass(*inputs(args.batch), args.batch)  # warm-up
    released_style_pass(*inputs(2))
    (batched, single), (t_batched, t_single) = alternate_times(
        [lambda: batched_pass(*inputs(args.images), args.batch), lambda: released_style_pass(*inputs(args.images))],
        device, args.repeats)

    diff = (batched - single).abs().max().item()
    print(f"device {device} (threads {torch.get_num_threads()}), CLIP {args.clip} at {clip_size} px, "
          f"classifier {args.classifier} at {cls_size} px, {num_classes} classes, {args.images} images, "
          f"box rule {args.box_rule}, best of {args.repeats} runs in turns")
    print(f"threshold {threshold:.3f}: {mean_count:.2f} crops per image")
    print(f"batched (batch {args.batch}): {args.images / t_batched:8.2f} images/s")
    print(f"one at a time (released):  {args.images / t_single:8.2f} images/s")
    print(f"speed-up {t_single / t_batched:.2f}x")
    print(f"labels: max |batched - one at a time| = {diff:.2e} ({'same' if diff < 1e-4 else 'DIFFERENT'} at 1e-4)")


if __name__ == "__main__":
    main()
