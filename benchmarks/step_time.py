"""Training-step time, evaluation throughput and peak memory of every task-A trainer.

    python benchmarks/step_time.py [--models small vitb16] [--methods coop cfsg ...]
                                   [--batch 8] [--steps 3] [--ssl none|fixmatch]

Each trainer is built through the harness on the embedded `synth_fg` benchmark (images
resized to the model's input) with two random-weight CLIPs of the same code path:
`small` (the embedded model's shape: 32 px, patch 4, widths 128/64) and `vitb16`
(ViT-B/16's shape: 224 px, patch 16, width 768, 12 blocks; text width 512, 77 tokens).
It prints the median step time, images/s at test time and peak memory (CUDA: allocated;
CPU: the process's peak RSS), plus each trainer's step time relative to CoOp's measured
in the same run. CUDA is used where available (with AMP), else the CPU.
"""
import argparse
import os
import resource
import statistics
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from leclip import harness  # noqa: E402
from leclip.backbone import random_clip, save_clip  # noqa: E402

SHAPES = {
    "small": dict(embed_dim=64, image_resolution=32, vision_layers=4, vision_width=128, vision_patch_size=4,
                  context_length=16, transformer_width=64, transformer_heads=1, transformer_layers=3),
    "vitb16": dict(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768, vision_patch_size=16,
                   context_length=77, transformer_width=512, transformer_heads=8, transformer_layers=12),
}


def build_trainer(method, model_path, resolution, batch, ssl_mode, data_root, output_dir):
    from leclip.dassl import build_trainer as build

    cfg = harness.setup_cfg(
        harness.trainer_config(method, "synth_fg"),
        harness.dataset_config("synth_fg"),
        harness.setting_opts("synth_fg", 5)
        + [
            "MODEL.BACKBONE.PATH", model_path,
            "INPUT.SIZE", f"({resolution}, {resolution})",
            "DATALOADER.TRAIN_X.BATCH_SIZE", str(batch),
            "DATALOADER.TEST.BATCH_SIZE", str(batch),
            "TRAINER.SSL.MODE", ssl_mode,
            "VERBOSE", "False",
        ],
        root=data_root,
        output_dir=output_dir,
        seed=1,
        trainer=harness.METHODS[method].trainer,
    )
    return build(cfg)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(trainer, steps):
    device = trainer.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    step_times = []
    if trainer.learns:
        trainer.before_train()
        trainer.epoch = 0
        trainer.before_epoch()
        trainer.set_model_mode("train")
        trainer.batch_idx, trainer.num_batches = 0, 10**9  # no LR update mid-benchmark
        batch_x = next(iter(trainer.train_loader_x))
        batch_u = next(iter(trainer.train_loader_u)) if trainer.train_loader_u is not None else None
        for step in range(steps + 1):  # the first step warms up
            sync(device)
            start = time.perf_counter()
            trainer.forward_backward(batch_x, batch_u)
            sync(device)
            if step:
                step_times.append(time.perf_counter() - start)
    trainer.set_model_mode("eval")
    batch = next(iter(trainer.test_loader))
    images = batch["img"].to(device)
    with torch.no_grad(), trainer.autocast():
        trainer.predict(images)
        sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            trainer.predict(images)
        sync(device)
    throughput = steps * len(images) / (time.perf_counter() - start)
    if device.type == "cuda":
        memory = f"{torch.cuda.max_memory_allocated() / 2**20:.0f} MiB (CUDA)"
    else:
        memory = f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB (RSS)"
    step = statistics.median(step_times) if step_times else None
    return step, throughput, memory


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--methods", nargs="+", default=harness.TASK_METHODS["A"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--ssl", default="none", choices=["none", "fixmatch"])
    args = parser.parse_args(argv)
    available = harness.registered_trainers()
    methods = [m for m in args.methods if harness.METHODS[m].trainer in available]
    skipped = [m for m in args.methods if m not in methods]
    if skipped:
        print(f"not available yet: {', '.join(skipped)}")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"device: {device} | torch {torch.__version__} | threads {torch.get_num_threads()} | "
          f"batch {args.batch} | SSL {args.ssl}")
    with tempfile.TemporaryDirectory() as tmp:
        for model_name in args.models:
            path = os.path.join(tmp, f"{model_name}.pt")
            save_clip(random_clip(**SHAPES[model_name]), path)
            resolution = SHAPES[model_name]["image_resolution"]
            print(f"\n== {model_name} (random weights, {resolution} px) ==")
            print(f"{'method':<14}{'step (s)':>10}{'vs CoOp':>9}{'eval img/s':>12}  peak memory")
            rows = {}
            for method in methods:
                trainer = build_trainer(method, path, resolution, args.batch, args.ssl, os.path.join(tmp, "data"),
                                        os.path.join(tmp, "out", model_name, method))
                rows[method] = measure(trainer, args.steps)
                del trainer
            reference = rows.get("coop", (None,))[0]
            for method, (step, throughput, memory) in rows.items():
                step_text = f"{step:.3f}" if step else "-"
                ratio = f"{step / reference:.2f}x" if step and reference else "-"
                print(f"{method:<14}{step_text:>10}{ratio:>9}{throughput:>12.1f}  {memory}")


if __name__ == "__main__":
    main()
