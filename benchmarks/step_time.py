"""Training-step time, evaluation throughput and peak memory of every trainer.

    python benchmarks/step_time.py [--models small vitb16] [--methods coop cfsg ccd ...]
                                   [--ssl none fixmatch] [--batch 8] [--steps 3]
                                   [--eval-images 64] [--data ./data] [--in-process]

Each trainer is built through the harness on the embedded world (task A methods on
`synth_fg`, CCD on `synth_ml` unsupervised, CSA on `synth_ml` with 10% labels; images
resized to the model's input) with two random-weight CLIPs of the same code path:
`small` (the embedded model's shape, `leclip.world.pretrain.ARCH`: 64 px, patch 8, widths 128/64) and `vitb16`
(ViT-B/16's shape: 224 px, patch 16, width 768, 12 blocks; text width 512, 77 tokens).
SSL on and off: TRAINER.SSL.MODE fixmatch / none for the task-A methods, CSA's
pseudo-labelled unlabeled batch (TRAINER.CSA.PSEUDO_LABELS) on / off; CCD always trains
on its pseudo-labels; zero-shot CLIP only evaluates.

Per row it prints the median step time (forward, backward and update of one step, the
first step not counted), its ratio to CoOp's in the same run, the evaluation throughput
(one class encode, then `--eval-images` images in batches, as an evaluation does) and
its ratio to zero-shot CLIP's, and the peak memory: CUDA's peak allocation, or on the CPU
the peak resident size of the process, which is why every row runs in a process of its
own (`--in-process`: one process, faster, but the memory column is then the running
maximum). CUDA is used where available (with the recipes' AMP), else the CPU.
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


def rows_of(method):
    if method == "zsclip":
        return "synth_fg", "5", SSL_OFF
    if method == "ccd":
        return "synth_ml", "unsup", {"-": []}
    if method == "csa":
        return "synth_ml", "0.1", {"none": ["TRAINER.CSA.PSEUDO_LABELS", "False", "TRAINER.CSA.CONTEXT", "True"],
                                   "pseudo": ["TRAINER.CSA.PSEUDO_LABELS", "True", "TRAINER.CSA.PL_START_EPOCH", "0"]}
    return "synth_fg", "5", SSL_BOTH


def build_trainer(method, model_path, resolution, batch, mode_opts, data_root, output_dir):
    from leclip.dassl import build_trainer as build

    dataset, setting, _ = rows_of(method)
    cfg = catalogue.setup_cfg(
        catalogue.trainer_configs(method, dataset),
        catalogue.dataset_config(dataset),
        catalogue.setting_opts(dataset, setting) + WORLDS[dataset] + [
            "MODEL.BACKBONE.PATH", model_path,
            "INPUT.SIZE", f"({resolution}, {resolution})",
            "DATALOADER.TRAIN_X.BATCH_SIZE", str(batch),
            "DATALOADER.TRAIN_U.BATCH_SIZE", str(batch),
            "DATALOADER.TEST.BATCH_SIZE", str(batch),
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
    """The batches of one step, as the trainer's run_epoch passes them to forward_backward:
    CCD (train_u only), labeled only, or labeled and unlabeled."""
    batch_u = next(iter(trainer.train_loader_u)) if trainer.train_loader_u is not None else None
    if type(trainer).__name__ == "CCD":
        return (batch_u,)
    batch_x = next(iter(trainer.train_loader_x))
    return (batch_x,) if batch_u is None else (batch_x, batch_u)


def measure(trainer, steps, eval_images):
    device = trainer.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    step_times = []
    if trainer.learns:
        trainer.before_train()
        trainer.epoch = 0
        trainer.before_epoch()
        if getattr(trainer, "fixmatch", None) is not None:
            trainer.fixmatch.start_epoch()
        if type(trainer).__name__ == "CSA":
            trainer.pseudo = trainer.pseudo_label_pass().to(device) if trainer.use_unlabeled else None
        if type(trainer).__name__ == "CCD":
            trainer.epoch_scores, trainer.epoch_index = [], []
        trainer.set_model_mode("train")
        trainer.batch_idx, trainer.num_batches = 0, 10**9  # no LR update mid-benchmark
        batches = first_batches(trainer)
        for step in range(steps + 1):  # the first step warms up
            sync(device)
            start = time.perf_counter()
            trainer.forward_backward(*batches)
            sync(device)
            if step:
                step_times.append(time.perf_counter() - start)
    trainer.set_model_mode("eval")
    batch = next(iter(trainer.test_loader))
    images = batch["img"].to(device)
    rounds = max(1, eval_images // len(images))
    with torch.no_grad(), trainer.autocast():
        trainer.predict(images, trainer.encode_classes())  # warm-up
        sync(device)
        start = time.perf_counter()
        classes = trainer.encode_classes()  # once per evaluation, as test() does
        for _ in range(rounds):
            trainer.predict(images, classes)
        sync(device)
    throughput = rounds * len(images) / (time.perf_counter() - start)
    if device.type == "cuda":
        memory = torch.cuda.max_memory_allocated() / 2**20
    else:
        memory = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"step": statistics.median(step_times) if step_times else None, "eval": throughput, "memory": memory}


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
    parser.add_argument("--row", help=argparse.SUPPRESS)  # internal: one row, JSON in and out
    args = parser.parse_args(argv)
    if args.row:
        print(json.dumps(run_row(json.loads(args.row))))
        return
    from leclip.backbone import random_clip, save_clip

    # the references of the ratio columns first
    methods = sorted(args.methods, key=lambda m: (m != "zsclip", m != "coop"))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"device: {device} | torch {torch.__version__} | threads {torch.get_num_threads()} | batch {args.batch} | "
          f"{args.steps} timed steps | eval: 1 class encode + {args.eval_images} images")
    data = os.path.abspath(args.data)
    with tempfile.TemporaryDirectory() as tmp:
        for model_name in args.models:
            path = os.path.join(tmp, f"{model_name}.pt")
            save_clip(random_clip(**SHAPES[model_name]), path)
            resolution = SHAPES[model_name]["image_resolution"]
            print(f"\n== {model_name} (random weights, {resolution} px) ==")
            print(f"{'method':<14}{'SSL':<10}{'step (s)':>10}{'vs CoOp':>9}{'eval img/s':>12}{'vs ZS':>7}"
                  f"{'peak MiB':>10}")
            rows = {}
            for method in methods:
                for mode, mode_opts in rows_of(method)[2].items():
                    if mode not in args.ssl and mode in SSL_BOTH:
                        continue
                    spec = dict(method=method, mode=mode, mode_opts=mode_opts, model_path=path, resolution=resolution,
                                batch=args.batch, steps=args.steps, eval_images=args.eval_images, data=data,
                                output_dir=os.path.join(tmp, "out", model_name, method, mode))
                    rows[method, mode] = run_row(spec) if args.in_process else run_isolated(spec)
                    print_row(method, mode, rows[method, mode], rows)


def print_row(method, mode, row, rows):
    coop = next((r["step"] for (m, s), r in rows.items() if m == "coop" and s == mode), None)
    zero_shot = next((r["eval"] for (m, _), r in rows.items() if m == "zsclip"), None)
    step = f"{row['step']:.3f}" if row["step"] else "-"
    vs_coop = f"{row['step'] / coop:.2f}x" if row["step"] and coop else "-"
    vs_zs = f"{row['eval'] / zero_shot:.2f}x" if zero_shot else "-"
    print(f"{method:<14}{mode:<10}{step:>10}{vs_coop:>9}{row['eval']:>12.1f}{vs_zs:>7}{row['memory']:>10.0f}",
          flush=True)


if __name__ == "__main__":
    main()
