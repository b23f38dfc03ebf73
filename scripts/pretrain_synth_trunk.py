"""Rebuild the embedded world's pretrained classifier weights for CCD on synth_ml
(leclip/world/assets/synth-<backbone>.pt, TRAINER.CCD.WEIGHTS "embedded") reproducibly.

    python scripts/pretrain_synth_trunk.py                    # the shipped mobilenet_v3_small
    python scripts/pretrain_synth_trunk.py --steps 50 --out try.pt

Trains a torchvision CNN to name single objects of the world (leclip.world.trunk: the
world's stand-in for ImageNet), prints how well its features name fresh ones, and saves
the state dict without its final layer in fp16. Same seed and thread count -> same weights.
"""
import argparse
import os.path as osp
import time

import torch

from leclip.world import trunk


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="mobilenet_v3_small", help="a torchvision classification model")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--input-size", type=int, default=64, help="as TRAINER.CCD.INPUT_SIZE of the synth recipe")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (part of what fixes the weights)")
    parser.add_argument("--out", default="", help="default: the package's asset for the backbone")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    start = time.time()
    model = trunk.pretrain(
        args.backbone, steps=args.steps, batch_size=args.batch_size, lr=args.lr, input_size=args.input_size,
        seed=args.seed,
    )
    print(f"pre-training took {(time.time() - start) / 60:.1f} min")
    accuracy = trunk.feature_accuracy(model, input_size=args.input_size, seed=args.seed)
    print(
        f"nearest-centroid accuracy of its features on 200 fresh single objects ({len(trunk.CLASSES)} classes, "
        f"centroids from 200 others): {accuracy:.1f}%"
    )
    out = args.out or trunk.asset_path(args.backbone)
    trunk.save_trunk(model, out)
    print(f"saved {out} ({osp.getsize(out) / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
