"""Rebuild the embedded CLIP `synth-vit` (leclip/world/assets/synth-vit.pt) reproducibly.

    python scripts/pretrain_synth_clip.py                      # the shipped checkpoint
    python scripts/pretrain_synth_clip.py --steps 50 --out try.pt

Pre-trains clip.model.CLIP contrastively on captioned images, crops and regions of the
synthetic world (leclip.world.captions, leclip.world.pretrain), saves fp16 weights, then
prints the saved model's zero-shot figures on both benchmarks
(`python scripts/world_report.py --model OUT` prints every property of the world).
Same seed and thread count -> same weights.
"""
import argparse
import json
import os.path as osp
import sys
import time

import torch

from leclip.backbone.loader import EMBEDDED_MODELS, load_clip, save_clip
from leclip.world import captions, pretrain, properties

MAX_BYTES = 10 * 1024 * 1024


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=96)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--region-weight", type=float, default=1.0)
    parser.add_argument("--init-logit-scale", type=float, default=50.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (part of what fixes the bytes)")
    parser.add_argument("--out", default=EMBEDDED_MODELS["synth-vit"])
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    start = time.time()
    model = pretrain.pretrain(
        steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed, region_weight=args.region_weight,
        init_logit_scale=args.init_logit_scale,
    )
    print(f"pre-training took {(time.time() - start) / 60:.1f} min")

    meta = {
        "world": "leclip.world",
        "steps": args.steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "region_weight": args.region_weight,
        "init_logit_scale": args.init_logit_scale,
        "seed": args.seed,
        "threads": args.threads,
        "captions": {
            name: getattr(captions, name)
            for name in ("P_PROPER", "P_PROPER_RIGHT", "P_PART_TYPICAL", "P_PART_RARE", "P_PART_LOCAL", "P_NAME_LARGE",
                         "P_NAME_SMALL")
        }
        | {"SYNONYMS": {word: list(use) for word, use in captions.SYNONYMS.items()}},
    }
    save_clip(model, args.out, meta)
    size = osp.getsize(args.out)
    if size > MAX_BYTES:
        sys.exit(f"{args.out} is {size / 2**20:.1f} MiB, over the 10 MiB the package may ship: shrink ARCH")

    # evaluate what was saved (fp16 weights), as every user will load it
    saved = load_clip("synth-vit", path=args.out)
    fg = properties.fg_properties(saved)
    ml = properties.ml_zero_shot(saved)
    print(f"saved {args.out} ({size / 2**20:.1f} MiB), logit scale {saved.logit_scale.exp().item():.1f}")
    print(f"synth_fg zero-shot closed accuracy {fg['zs_closed_acc']:.1f}% (chance {fg['zs_chance']:.1f}%), "
          f"AUROC {fg['zs_auroc']:.1f}")
    print(f"synth_fg linear probe: global feature {fg['probe_global']:.1f}%, the part's patch {fg['probe_part_patch']:.1f}%")
    print(f"synth_ml zero-shot mAP {ml['zs_map']:.1f} (label-frequency baseline {ml['frequency_map']:.1f})")
    print(f"total {(time.time() - start) / 60:.1f} min")
    print(json.dumps({k: round(float(v), 2) for k, v in {**fg, **ml}.items()}))


if __name__ == "__main__":
    main()
