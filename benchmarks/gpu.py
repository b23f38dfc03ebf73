"""Every method at ViT-B/16 with its recipe's batch and precision: one command for a GPU.

    python benchmarks/gpu.py [--methods coop cfsg ...] [--steps 5] [--eval-images 500]
                             [--json gpu_benchmark.json] [--peak-tflops N] [--data ./data] [--toy]

Per method (its recipe on a real benchmark of its task, CUB or COCO, e.g.
configs/trainers/LECoOp/vit_b16.yaml, else its synth.yaml (CCD today); the embedded
world's images resized to the recipe's input; a random CLIP of ViT-B/16's shape,
benchmarks/step_time.py's `vitb16`), in this one process:
- step time: median of `--steps` training steps (forward, backward, update) after a
  warm-up, with the recipe's train batch and TRAINER.PREC (AMP on CUDA);
- images/s: the images one step reads (labeled and unlabeled) / the step time;
- peak memory: CUDA's peak allocation for the method (on the CPU: the process's peak
  resident size so far, a running maximum);
- MFU: the step's FLOPs (matrix products and convolutions of one step, counted by
  torch.utils.flop_counter) / step time / the card's dense fp16 tensor peak (a table of
  known cards, or --peak-tflops); "-" where no peak is known (the CPU);
- eval throughput: one class encode, then --eval-images images in test batches, as an
  evaluation runs, the best of 3; and its ratio to zero-shot CLIP's.
The table is printed and the same rows are written as JSON (--json). `--toy`: the
embedded model's shape (64 px), batch 2, one step, for the test suite on a CPU.
"""
import argparse
import json
import os
import sys
import tempfile

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import step_time  # noqa: E402

from leclip import catalogue  # noqa: E402
from leclip.files import write_text_atomic  # noqa: E402

# dense fp16/bf16 tensor-core peaks (TFLOP/s, no sparsity), the vendors' data sheets;
# the first name contained in the device's name wins
PEAK_TFLOPS = [
    ("H200", 989.0), ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0), ("A100", 312.0),
    ("L40S", 362.0), ("L4", 121.0), ("A10G", 70.0), ("A10", 125.0), ("V100", 125.0), ("T4", 65.0),
]


def table_peak(name):
    """The peak FLOP/s of a CUDA device of this name, or None if the table has no such card."""
    return next((tflops * 1e12 for key, tflops in PEAK_TFLOPS if key in name), None)


def device_peak(device, override):
    """(device name, its peak FLOP/s or None): --peak-tflops, else the table's (CUDA)."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    if override:
        return name, override * 1e12
    return name, table_peak(name) if device.type == "cuda" else None


# a real benchmark of each task, whose ViT-B/16 recipe the GPU rows take
REAL = {"A": "cub", "B": "coco", "C": "coco"}


def recipe(method, toy):
    """The method's config files: its recipe on a real benchmark of its task (ViT-B/16),
    or where it has none, and for --toy, its embedded-world recipe."""
    dataset = step_time.rows_of(method)[0]
    if not toy:
        try:
            return [catalogue.trainer_config(method, REAL[catalogue.methods()[method].tasks[0]])]
        except catalogue.HarnessError:
            pass
    return catalogue.trainer_configs(method, dataset)


def run_method(method, model_path, args, tmp):
    resolution = step_time.SHAPES["small" if args.toy else "vitb16"]["image_resolution"]
    mode_opts = next(iter(step_time.rows_of(method)[2].values()))  # SSL off / the method's only mode
    files = recipe(method, args.toy)
    trainer = step_time.build_trainer(
        method, model_path, resolution, 2 if args.toy else None, mode_opts, args.data,
        os.path.join(tmp, "out", method), config_files=files,
    )
    result = step_time.measure(trainer, args.steps, args.eval_images, flops=trainer.learns)
    result.update(method=method, recipe=os.path.relpath(files[0], catalogue.REPO), batch=trainer.cfg.DATALOADER.TRAIN_X.BATCH_SIZE, prec=trainer.cfg.TRAINER.PREC,
                  amp=trainer.device.type == "cuda" and trainer.cfg.TRAINER.PREC in ("amp", "fp16"))
    del trainer
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return result


def finish(row, peak, zero_shot):
    """Adds images/s, MFU and the ratio to zero-shot CLIP to a measured row."""
    step = row.get("step")
    row["images_per_s"] = row["step_images"] / step if step else None
    row["mfu"] = row["flops"] / step / peak if step and peak else None
    row["eval_vs_zero_shot"] = row["eval"] / zero_shot if zero_shot else None
    return row


def fmt(value, pattern):
    return "-" if value is None else format(value, pattern)


def print_row(row):
    print(f"{row['method']:<14}{row['batch']:>6}{'amp' if row['amp'] else 'fp32':>6}{fmt(row['step'], '.3f'):>10}"
          f"{fmt(row['images_per_s'], '.1f'):>10}{row['memory']:>10.0f}{fmt(row.get('flops'), '.3g'):>11}"
          f"{fmt(row['mfu'] and 100 * row['mfu'], '.1f'):>7}{row['eval']:>11.1f}"
          f"{fmt(row['eval_vs_zero_shot'], '.2f'):>8}", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+",
                        default=[m for m, method in catalogue.methods().items() if method.variant is None])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--eval-images", type=int, default=500)
    parser.add_argument("--json", default="gpu_benchmark.json", help="where the rows are written")
    parser.add_argument("--peak-tflops", type=float, default=0.0, help="the device's peak (0: the table's)")
    parser.add_argument("--data", default="./data", help="where the embedded world is rendered (kept for reruns)")
    parser.add_argument("--toy", action="store_true", help="the embedded model's shape, batch 2, for a CPU")
    args = parser.parse_args(argv)
    if args.toy:
        args.steps = 1
    unknown = [m for m in args.methods if m not in catalogue.methods()]
    if unknown:
        parser.error(f"unknown methods {unknown}: use names from {list(catalogue.methods())}")
    methods = sorted(args.methods, key=lambda m: m != "zsclip")  # the reference of the last column first
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name, peak = device_peak(device, args.peak_tflops)
    shape = "small" if args.toy else "vitb16"
    print(f"device: {name} | torch {torch.__version__} | CLIP shape {shape} (random weights) | "
          f"{args.steps} timed steps | eval: 1 class encode + {args.eval_images} images")
    print(f"{'method':<14}{'batch':>6}{'prec':>6}{'step (s)':>10}{'img/s':>10}{'peak MiB':>10}{'FLOPs/step':>11}"
          f"{'MFU %':>7}{'eval img/s':>11}{'vs ZS':>8}")
    rows, zero_shot = [], None
    with tempfile.TemporaryDirectory() as tmp:
        model_path = os.path.join(tmp, f"{shape}.pt")
        from leclip.backbone import random_clip, save_clip

        save_clip(random_clip(**step_time.SHAPES[shape]), model_path)
        for method in methods:
            try:
                row = run_method(method, model_path, args, tmp)
            except Exception as error:  # one method's failure does not cost the others' rows
                rows.append({"method": method, "error": f"{type(error).__name__}: {error}"})
                print(f"{method:<14}failed: {rows[-1]['error']}", flush=True)
                continue
            zero_shot = row["eval"] if method == "zsclip" else zero_shot
            rows.append(finish({"flops": None, "step_images": 0, **row}, peak, zero_shot))
            print_row(rows[-1])
    report = {"device": name, "torch": torch.__version__, "shape": shape, "peak_flops": peak, "steps": args.steps,
              "eval_images": args.eval_images, "rows": rows}
    write_text_atomic(args.json, json.dumps(report, indent=1))
    print(f"written: {os.path.abspath(args.json)}")
    return report


if __name__ == "__main__":
    main()
