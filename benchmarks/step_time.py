"""Training-step time, evaluation throughput and peak memory of every trainer.

    python benchmarks/step_time.py [--models small vitb16] [--methods coop cfsg ccd ...]
                                   [--ssl none fixmatch] [--batch 8] [--steps 3]
                                   [--eval-images 64] [--data ./data] [--in-process | --alternate]

Each trainer is built through the harness on the embedded world (task A methods on
`synth_fg`, CCD on `synth_ml` unsupervised, CSA on `synth_ml` with 10% labels; images
resized to the model's input) with two random-weight CLIPs of the same code path:
`small` (the embedded model's shape, `leclip.world.pretrain.ARCH`: 64 px, patch 8, widths 128/64) and `vitb16`
(ViT-B/16's shape: 224 px, patch 16, width 768, 12 blocks; text width 512, 77 tokens).
SSL on and off: TRAINER.SSL.MODE fixmatch / none for the task-A methods, CSA's
pseudo-labelled unlabeled batch (TRAINER.CSA.PSEUDO_LABELS) on / off; CCD always trains
on its pseudo-labels, and at `vitb16` with the release's classifier shape (ResNet-50 at
448 px, random weights); zero-shot CLIP only evaluates.

Per row it prints the median step time (forward, backward and update of one step, the
first step not counted), its ratio to CoOp's in the same run, the evaluation throughput
(one class encode, then `--eval-images` images in batches, as an evaluation does; the
best of 3, as load on a shared machine only slows) and its ratio to zero-shot CLIP's,
and the peak memory: CUDA's peak allocation, or on the CPU the peak resident size of the
process, which is why every row runs in a process of its own (`--in-process`: one
process, faster, but the memory column is then the running maximum). `--alternate`
builds every row in one process and measures them in turns: one step of each row, then
the next; one evaluation of each, then the next; so a shared machine's load falls on
every row alike and the ratio columns compare like with like (no memory column). CUDA is
used where available (with the recipes' AMP), else the CPU.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from leclip import catalogue  # noqa: E402
from leclip.world.pretrain import ARCH  # noqa: E402

SHAPES = {
    "small": dict(ARCH),
    "vitb16": dict(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768, vision_patch_size=16,
                   context_length=77, transformer_width=512, transformer_heads=8, transformer_layers=12),
}
# a few images per class: the benchmark times steps, it does not train
WORLDS = {
    "synth_fg": ["DATASET.SYNTH.POOL_PER_CLASS", "20", "DATASET.SYNTH.TEST_PER_CLASS", "10"],
    "synth_ml": ["DATASET.SYNTH.POOL_PER_CLASS", "8", "DATASET.SYNTH.TEST_PER_CLASS", "2"],
}
# method -> (dataset, setting, {ssl mode: config overrides}) ; "-" = the method's only mode
SSL_OFF = {"none": ["TRAINER.SSL.MODE", "none"]}
SSL_BOTH = {**SSL_OFF, "fixmatch": ["TRAINER.SSL.MODE", "fixmatch"]}
# (model, method) -> overrides: at ViT-B/16's shape CCD's classifier is the release's,
# ResNet-50 at 448 px (random weights: the benchmark times, it does not learn)
AT_SHAPE = {("vitb16", "ccd"): ["TRAINER.CCD.BACKBONE", "resnet50", "TRAINER.CCD.WEIGHTS", "random",
                                "TRAINER.CCD.INPUT_SIZE", "448"]}


def rows_of(method):
    if method == "zsclip":
        return "synth_fg", "5", SSL_OFF
    if method == "ccd":
        # a random CLIP's labels are near uniform: with the released entropy limit every
        # image is unreliable and CLIP's class bias has nothing to be estimated from
        return "synth_ml", "unsup", {"-": ["TRAINER.CCD.MAX_ENTROPY", "100.0"]}
    if method == "csa":
        return "synth_ml", "0.1", {"none": ["TRAINER.CSA.PSEUDO_LABELS", "False", "TRAINER.CSA.CONTEXT", "True"],
                                   "pseudo": ["TRAINER.CSA.PSEUDO_LABELS", "True", "TRAINER.CSA.PL_START_EPOCH", "0"]}
    return "synth_fg", "5", SSL_BOTH


def build_trainer(method, model_path, resolution, batch, mode_opts, data_root, output_dir, config_files=None):
    """The method's trainer on its embedded world at `resolution`; `config_files` (default:
    its synth recipe) and `batch` (None: the recipe's train and test batches)."""
    from leclip.dassl import build_trainer as build

    dataset, setting, _ = rows_of(method)
    batches = [] if batch is None else [
        "DATALOADER.TRAIN_X.BATCH_SIZE", str(batch),
        "DATALOADER.TRAIN_U.BATCH_SIZE", str(batch),
        "DATALOADER.TEST.BATCH_SIZE", str(batch),
    ]
    cfg = catalogue.setup_cfg(
        config_files or catalogue.trainer_configs(method, dataset),
        catalogue.dataset_config(dataset),
        catalogue.setting_opts(dataset, setting) + WORLDS[dataset] + batches + [
            "MODEL.BACKBONE.PATH", model_path,
            "INPUT.SIZE", f"({resolution}, {resolution})",
            "TRAINER.CCD.CACHE_DIR", os.path.join(output_dir, "cache"),
            "VERBOSE", "False",
        ] + mode_opts,
        root=data_root,
        output_dir=output_dir,
        seed=1,
        trainer=catalogue.methods()[method].trainer,
    )
    return build(cfg)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def first_batches(trainer):
    """The batches of one step, as the training loop passes them to forward_backward: one
    from each of the epoch's loaders (None where the method reads none, e.g. CCD's labeled)."""
    return tuple(None if loader is None else next(iter(loader)) for loader in trainer.epoch_loaders(0))


def count_flops(trainer, batches):
    """FLOPs of one training step (forward, backward; matrix products and convolutions)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        trainer.forward_backward(*batches)
    return counter.get_total_flops()


def prepare_steps(trainer):
    """Puts a learning trainer where a step starts (the epoch's setup, train mode, no LR
    update mid-benchmark) and returns the batches of one step."""
    trainer.before_train()
    trainer.epoch = 0
    trainer.before_epoch()  # each method's epoch start: its unlabeled strategy, CSA's pseudo-labels, ...
    trainer.set_model_mode("train")
    trainer.batch_idx, trainer.num_batches = 0, 10**9
    return first_batches(trainer)


def timed_step(trainer, batches):
    """Seconds of one training step (forward, backward, update)."""
    trainer.set_model_mode("train")
    sync(trainer.device)
    start = time.perf_counter()
    trainer.forward_backward(*batches)
    sync(trainer.device)
    return time.perf_counter() - start


def measure(trainer, steps, eval_images, flops=False):
    """{step: median seconds, eval: images/s, memory: peak MiB} and, with `flops`,
    {flops: of one step, step_images: the images one step reads}."""
    device = trainer.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    step_times, extra = [], {}
    if trainer.learns:
        batches = prepare_steps(trainer)
        step_times = [timed_step(trainer, batches) for _ in range(steps + 1)][1:]  # the first step warms up
        if flops:
            extra = {"flops": count_flops(trainer, batches),
                     "step_images": sum(len(b["img"]) for b in batches if b is not None)}
    throughput = eval_throughput(trainer, eval_images)
    if device.type == "cuda":
        memory = torch.cuda.max_memory_allocated() / 2**20
    else:
        memory = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"step": statistics.median(step_times) if step_times else None, "eval": throughput, "memory": memory,
            **extra}


def eval_images_of(trainer):
    """One test batch on the device: what every evaluation round of this trainer reads."""
    return next(iter(trainer.test_loader))["img"].to(trainer.device)


@torch.no_grad()
def eval_round(trainer, images, eval_images):
    """Images/s of one evaluation: one class encode, then `eval_images` images (at least
    one batch) in batches of `images`, as test() runs."""
    trainer.set_model_mode("eval")
    rounds = max(1, eval_images // len(images))
    with trainer.autocast():
        sync(trainer.device)
        start = time.perf_counter()
        classes = trainer.encode_classes()
        for _ in range(rounds):
            trainer.predict(images, classes)
        sync(trainer.device)
    return rounds * len(images) / (time.perf_counter() - start)


def eval_throughput(trainer, eval_images, repeats=3):
    """The best of `repeats` evaluations (`eval_round`) after a warm-up, as a shared
    machine's load only slows."""
    images = eval_images_of(trainer)
    eval_round(trainer, images, 1)  # warm-up
    return max(eval_round(trainer, images, eval_images) for _ in range(repeats))


def alternate(trainers, steps, eval_images, repeats=3):
    """{row: {step, eval, memory None}} of trainers measured in turns in this one process:
    one training step of each learning row in turn, `steps + 1` times (the first turn warms
    up; median), then one evaluation of each row in turn, after a warm-up turn, `repeats`
    times (best). Load on a shared machine falls on every row alike, so the ratios between
    rows hold where the times themselves do not."""
    batches = {row: prepare_steps(t) for row, t in trainers.items() if t.learns}
    times = {row: [] for row in batches}
    for turn in range(steps + 1):
        for row, b in batches.items():
            seconds = timed_step(trainers[row], b)
            if turn:
                times[row].append(seconds)
    images = {row: eval_images_of(t) for row, t in trainers.items()}
    for row, t in trainers.items():
        eval_round(t, images[row], 1)  # warm-up
    best = dict.fromkeys(trainers, 0.0)
    for _ in range(repeats):
        for row, t in trainers.items():
            best[row] = max(best[row], eval_round(t, images[row], eval_images))
    return {row: {"step": statistics.median(times[row]) if row in times else None, "eval": best[row],
                  "memory": None} for row in trainers}


def run_row(spec):
    trainer = build_trainer(spec["method"], spec["model_path"], spec["resolution"], spec["batch"], spec["mode_opts"],
                            spec["data"], spec["output_dir"])
    return measure(trainer, spec["steps"], spec["eval_images"])


def run_isolated(spec):
    """run_row in a child process (its own peak memory); returns its JSON result."""
    done = subprocess.run([sys.executable, __file__, "--row", json.dumps(spec)], capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{spec['method']} ({spec['mode']}) failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--methods", nargs="+", default=[m for m in catalogue.methods() if catalogue.methods()[m].variant is None])
    parser.add_argument("--ssl", nargs="+", default=["none", "fixmatch"], help="SSL modes of the task-A methods")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--eval-images", type=int, default=64, help="images per timed evaluation (one class encode)")
    parser.add_argument("--data", default="./data", help="where the embedded world is rendered (kept for reruns)")
    parser.add_argument("--in-process", action="store_true", help="all rows in this process (memory: running max)")
    parser.add_argument("--alternate", action="store_true",
                        help="all rows in this process, measured in turns (ratios under the same load; no memory)")
    parser.add_argument("--row", help=argparse.SUPPRESS)  # internal: one row, JSON in and out
    args = parser.parse_args(argv)
    if args.row:
        print(json.dumps(run_row(json.loads(args.row))))
        return
    from leclip.backbone import random_clip, save_clip

    # the references of the ratio columns first
    methods = sorted(args.methods, key=lambda m: (m != "zsclip", m != "coop"))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    how = "in turns, one process" if args.alternate else "row by row"
    print(f"device: {device} | torch {torch.__version__} | threads {torch.get_num_threads()} | batch {args.batch} | "
          f"{args.steps} timed steps | eval: 1 class encode + {args.eval_images} images | {how}")
    data = os.path.abspath(args.data)
    with tempfile.TemporaryDirectory() as tmp:
        for model_name in args.models:
            path = os.path.join(tmp, f"{model_name}.pt")
            save_clip(random_clip(**SHAPES[model_name]), path)
            resolution = SHAPES[model_name]["image_resolution"]
            print(f"\n== {model_name} (random weights, {resolution} px) ==")
            specs = {
                (method, mode): dict(method=method, mode=mode,
                                     mode_opts=mode_opts + AT_SHAPE.get((model_name, method), []), model_path=path,
                                     resolution=resolution, batch=args.batch, steps=args.steps,
                                     eval_images=args.eval_images, data=data,
                                     output_dir=os.path.join(tmp, "out", model_name, method, mode))
                for method in methods for mode, mode_opts in rows_of(method)[2].items()
                if mode in args.ssl or mode not in SSL_BOTH
            }
            if args.alternate:
                trainers = {row: build_trainer(spec["method"], path, resolution, args.batch, spec["mode_opts"], data,
                                               spec["output_dir"]) for row, spec in specs.items()}
                rows = alternate(trainers, args.steps, args.eval_images)
                del trainers
            print(f"{'method':<14}{'SSL':<10}{'step (s)':>10}{'vs CoOp':>9}{'eval img/s':>12}{'vs ZS':>7}"
                  f"{'peak MiB':>10}")
            if args.alternate:
                for row in specs:
                    print_row(*row, rows[row], rows)
                continue
            rows = {}
            for row, spec in specs.items():
                rows[row] = run_row(spec) if args.in_process else run_isolated(spec)
                print_row(*row, rows[row], rows)


def print_row(method, mode, row, rows):
    """One table row; its step against CoOp's of the same SSL mode (else CoOp's without
    SSL), its evaluation against zero-shot CLIP's."""
    coops = {s: r["step"] for (m, s), r in rows.items() if m == "coop"}
    coop = coops.get(mode, coops.get("none"))
    zero_shot = next((r["eval"] for (m, _), r in rows.items() if m == "zsclip"), None)
    step = f"{row['step']:.3f}" if row["step"] else "-"
    vs_coop = f"{row['step'] / coop:.2f}x" if row["step"] and coop else "-"
    vs_zs = f"{row['eval'] / zero_shot:.2f}x" if zero_shot else "-"
    memory = "-" if row["memory"] is None else f"{row['memory']:.0f}"
    print(f"{method:<14}{mode:<10}{step:>10}{vs_coop:>9}{row['eval']:>12.1f}{vs_zs:>7}{memory:>10}", flush=True)


if __name__ == "__main__":
    main()
