"""CCD's label passes per image at the release's shapes, on this machine (random weights).

    python benchmarks/real_shape.py --clip ViT-B/16|RN50x64 [--size 640] [--crops 5] [--classes 20]

What one training image costs in each of CCD's passes with the released geometry
(configs/trainers/CCD/<dataset>.yaml): a random CLIP of the official architecture and
width (`SHAPES`), a random-weight ResNet-50 CAM classifier, one image at a time:
- `global`: CLIP's label of the whole image squashed to SIZE px, its position
  embeddings resampled (`any_size.encode_any_size`, `label_update.clip_image_probs`);
- `selection`: the update's class-selection and CAM pass, the classifier at SIZE px
  (`label_update.cam_candidates`, the released box rule);
- `crops`: CROPS crops of the image at their boxes' own aspects, long side SIZE, one CLIP
  forward each, as released (`label_update.crops_update`); 5 is about what the release's
  bound selects per image on VOC (4 to 6 classes).
Each pass runs once under torch's FlopCounterMode (its FLOPs; it also warms up), then
once timed: wall and CPU seconds. Prints one line per pass and the process's peak
resident memory. The training step itself: `scripts/smoke_matrix.py --time ccd ...`.
"""
import argparse
import os
import resource
import sys
import time
from functools import partial

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from leclip.backbone import class_text_features, random_clip  # noqa: E402
from leclip.multilabel import label_update  # noqa: E402
from leclip.multilabel.any_size import encode_any_size  # noqa: E402
from leclip.multilabel.cam import CAMClassifier  # noqa: E402

# the official architectures (OpenAI's released models' shapes)
TEXT = dict(context_length=77, transformer_heads=8, transformer_layers=12)
SHAPES = {
    "ViT-B/16": dict(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768, vision_patch_size=16,
                     transformer_width=512, **TEXT),
    "RN50x64": dict(embed_dim=1024, image_resolution=448, vision_layers=(3, 15, 36, 10), vision_width=128,
                    vision_patch_size=None, **{**TEXT, "transformer_heads": 16}, transformer_width=1024),
}
# boxes (x1, y1, x2, y2) in a 640 px view, of varied aspects, as a CAM's boxes are
BOXES = [(0, 0, 640, 480), (100, 50, 500, 600), (0, 200, 320, 640), (200, 0, 640, 640), (50, 50, 600, 400)]


def measure(fn):
    """(wall s, CPU s, FLOPs) of fn(): a counted warm-up run, then a timed one."""
    with FlopCounterMode(display=False) as counter:
        fn()
    start, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - start, time.process_time() - cpu, counter.get_total_flops()


def passes(clip_name, size, crops, classes):
    """{pass name: its function on one image} at the given shapes."""
    clip_model = random_clip(**SHAPES[clip_name])
    encode = partial(encode_any_size, clip_model)
    text = class_text_features(clip_model, [f"class {i}" for i in range(classes)], "a photo of the {}", "cpu")
    classifier = CAMClassifier(classes, "resnet50", "random")
    image = torch.randn(1, 3, size, size)
    scale = size / 640
    boxes = (torch.tensor(BOXES * (crops // len(BOXES) + 1), dtype=torch.float32)[:crops] * scale)
    old, bias = torch.full((1, classes), 1.0 / classes), torch.full((classes,), 1.0 / classes)
    return {
        "global": lambda: label_update.clip_image_probs(encode, image, text),
        "selection": lambda: label_update.cam_candidates(classifier, image, (size, size), box_rule="released"),
        "crops": lambda: label_update.crops_update(image, boxes, torch.zeros(crops, dtype=torch.long), encode, text,
                                                   old, bias, long_side=size),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", choices=list(SHAPES), default="ViT-B/16")
    parser.add_argument("--size", type=int, default=640, help="the squash, the label pass and the crops' long side")
    parser.add_argument("--crops", type=int, default=5, help="crops per image (selected classes)")
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--only", nargs="+", choices=("global", "selection", "crops"))
    args = parser.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    with torch.no_grad():
        for name, fn in passes(args.clip, args.size, args.crops, args.classes).items():
            if args.only and name not in args.only:
                continue
            wall, cpu, flops = measure(fn)
            print(f"{args.clip} {args.size} px {name:<9} per image: {wall:.1f} s ({cpu:.1f} s CPU, "
                  f"{flops / 1e12:.3f} TFLOP)", flush=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident {peak:.0f} MiB ({torch.get_num_threads()} threads)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
