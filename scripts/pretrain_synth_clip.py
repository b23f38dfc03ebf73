"""Rebuild the embedded CLIP `synth-vit` (leclip/world/assets/synth-vit.pt) reproducibly.

    python scripts/pretrain_synth_clip.py                      # the shipped checkpoint
    python scripts/pretrain_synth_clip.py --steps 50 --out try.pt

Pre-trains clip.model.CLIP contrastively on captioned images of the synthetic world
(leclip.world.captions), then prints its zero-shot closed accuracy on synth_fg (ID test
images, argmax over the ID classes) and its zero-shot mAP on synth_ml beside the
label-frequency baseline, and saves fp16 weights. Same seed and thread count -> same
weights.
"""
import argparse
import json
import os.path as osp
import sys
import time

import torch

from leclip.backbone.loader import EMBEDDED_MODELS, load_clip, save_clip
from leclip.world import captions, pretrain

MAX_BYTES = 10 * 1024 * 1024


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (part of what fixes the bytes)")
    parser.add_argument("--out", default=EMBEDDED_MODELS["synth-vit"])
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    start = time.time()
    model = pretrain.pretrain(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    minutes = (time.time() - start) / 60
    print(f"pre-training took {minutes:.1f} min")

    meta = {
        "world": "leclip.world",
        "steps": args.steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
        "caption_noise": {"P_SHADE": captions.P_SHADE, "P_WRONG_SHADE": captions.P_WRONG_SHADE, "P_TEXTURE": captions.P_TEXTURE},
    }
    save_clip(model, args.out, meta)
    size = osp.getsize(args.out)
    if size > MAX_BYTES:
        sys.exit(f"{args.out} is {size / 2**20:.1f} MiB, over the 10 MiB the package may ship: shrink ARCH")

    # evaluate what was saved (fp16 weights), as every user will load it
    figures = pretrain.evaluate(load_clip("synth-vit", path=args.out))
    print(f"saved {args.out} ({size / 2**20:.1f} MiB)")
    print(f"synth_fg zero-shot closed accuracy: {figures['fg_closed_acc']:.1f}% (chance {figures['fg_chance']:.1f}%)")
    print(f"synth_fg 5-shot linear probe on frozen features: {figures['fg_probe_acc']:.1f}%")
    print(f"synth_ml zero-shot mAP: {figures['ml_map']:.1f}% (label-frequency baseline {figures['ml_frequency_map']:.1f}%)")
    print(json.dumps({k: round(v, 2) for k, v in figures.items()}))


if __name__ == "__main__":
    main()
