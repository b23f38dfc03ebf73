"""LE-CLIP's training step against the official code's, side by side, on the same weights.

    python benchmarks/vs_official.py --coop PATH --maple PATH --locoop PATH --plot PATH
                                     [--dassl PATH] [--batch 8 32] [--classes 50 100] [--steps 3]
                                     [--threads N]

PATH is your own clone of the official repository (github.com/KaiyangZhou/CoOp,
muzairkhattak/multimodal-prompt-learning, AtsuMiyai/LoCoOp, CHENGY12/PLOT); the official
trainers import Dassl.pytorch, so it must be installed or cloned (--dassl). Nothing of
theirs ships with LE-CLIP: this script imports their modules from PATH. A method whose
PATH is not given is skipped with a message.

Every method at every batch size and class count given runs in this one command, so the
ratios of a table were measured under the same conditions. Per method and shape, in one
child process (each repository vendors its own `clip` package):
one random CLIP of ViT-B/16's shape (224 px, patch 16, width 768, 12 blocks; text width
512, 77 tokens; weights exactly representable in fp16, because the official loader
round-trips them through fp16) is loaded by the official `clip.build_model` and by
LE-CLIP's loader; both models get the same learnable initial values, the same images
(randn) and labels; then the official trainer's `forward_backward` (run on a stand-in
trainer whose update is zero_grad + backward, no optimizer step) and LE-CLIP's step
(encode_classes, forward, the method's loss, backward) are timed `--steps` times each,
alternately, after a warm-up of each, in fp32 on the CPU (or CUDA when present); each
side's fastest step counts (load on a shared machine only slows). It prints them,
their ratio (ours / official) and how far the outputs are apart: the logits and the loss
of an evaluation forward, and the gradient of every learnable tensor after each side's
last timed step (max absolute difference).

Shims, which only adapt the official code to a CPU and to fp32, and are listed in the
output: `.cuda()` / `.to("cuda")` run on the CPU (LoCoOp and PLOT call them
unconditionally); MaPLe's `.half()` casts of its prompt tokens are no-ops (it rounds them
to fp16 even in an fp32 model); PLOT's released image side is ResNet-only, so on a ViT
its image encoder is replaced by the class and patch tokens through ln_post and proj
(its prompt learner, text encoder, Sinkhorn and logits stay official).

Settings (the papers' ViT-B/16 recipes): CoOp 16 context tokens, class token at the end;
LoCoOp the same, lambda 0.25, top-K 20% of the classes; PLOT 16 tokens, N 4 prompt sets;
MaPLe 2 tokens from "a photo of a", prompt depth 9.
"""
import argparse
import contextlib
import json
import os
import os.path as osp
import statistics
import subprocess
import sys
import tempfile
import time

HERE = osp.dirname(osp.abspath(__file__))
REPO = osp.dirname(HERE)
METHODS = ("coop", "maple", "locoop", "plot")
# class names of varied token lengths (fine-grained style)
CLASSNAMES = [
    "black footed albatross", "laysan albatross", "crested auklet", "red winged blackbird", "bobolink",
    "painted bunting", "gray catbird", "brandt cormorant", "american crow", "mangrove cuckoo",
    "northern flicker", "acadian flycatcher", "european goldfinch", "boat tailed grackle", "pigeon guillemot",
    "anna hummingbird", "blue jay", "green kingfisher", "horned lark", "pacific loon",
]
N_CTX, PLOT_N, LOCOOP_LAMBDA = 16, 4, 0.25
MAPLE_N_CTX, MAPLE_INIT, MAPLE_DEPTH = 2, "a photo of a", 9


# ---------------------------------------------------------------- shims (official code on a CPU, fp32)
@contextlib.contextmanager
def cuda_on_cpu():
    """`.cuda()` and `.to("cuda"...)` of tensors and modules stay on the CPU."""
    import torch

    saved = torch.Tensor.cuda, torch.Tensor.to, torch.nn.Module.cuda

    def is_cuda(value):
        return (isinstance(value, str) and value.startswith("cuda")) or (
            isinstance(value, torch.device) and value.type == "cuda")

    def to(self, *args, **kwargs):
        args = tuple("cpu" if is_cuda(a) else a for a in args)
        if is_cuda(kwargs.get("device")):
            kwargs["device"] = "cpu"
        return saved[1](self, *args, **kwargs)

    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.Tensor.to = to
    torch.nn.Module.cuda = lambda self, *a, **k: self
    try:
        yield
    finally:
        torch.Tensor.cuda, torch.Tensor.to, torch.nn.Module.cuda = saved


@contextlib.contextmanager
def half_is_identity():
    import torch

    saved = torch.Tensor.half
    torch.Tensor.half = lambda self, *a, **k: self
    try:
        yield
    finally:
        torch.Tensor.half = saved


class StandIn:
    """What an official trainer's forward_backward reads from `self`; its update is
    zero_grad + backward (no optimizer step, on either side)."""

    def __init__(self, cfg, model, **extra):
        self.cfg, self.model = cfg, model
        self.batch_idx, self.num_batches, self.scaler = 0, 2, None
        self.optim = self  # MaPLe calls self.optim.zero_grad() / .step()
        self.__dict__.update(extra)

    def parse_batch_train(self, batch):
        return batch["img"], batch["label"]

    def zero_grad(self):
        self.model.zero_grad(set_to_none=True)

    def step(self):
        pass

    def model_backward_and_update(self, loss):
        self.zero_grad()
        loss.backward()

    def update_lr(self):
        pass


def official_cfg(node, options, size, dataset="OxfordPets", backbone="ViT-B/16", **root):
    """The few cfg keys the official prompt learners and trainers read."""
    from yacs.config import CfgNode

    cfg = CfgNode()
    cfg.INPUT = CfgNode({"SIZE": (size, size)})
    cfg.DATASET = CfgNode({"NAME": dataset})
    cfg.MODEL = CfgNode({"BACKBONE": CfgNode({"NAME": backbone})})
    cfg.TRAINER = CfgNode({node: CfgNode(dict(options, PREC="fp32"))})
    for key, value in root.items():
        cfg[key] = value
    return cfg


def freeze_all_but(model, *keep):
    """As the official build_model: only parameters whose name holds one of `keep` learn."""
    for name, p in model.named_parameters():
        p.requires_grad_(any(k in name for k in keep))


def learnable(model):
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


# ---------------------------------------------------------------- the two sides of each method
def build(method, official, clip_file, classnames):
    """(official model, official forward_backward, its stand-in trainer, our model, our loss
    function, pairs of (official, ours) learnable tensors that must start equal)."""
    import torch
    import torch.nn as nn

    state = torch.load(clip_file, map_location="cpu", weights_only=True)["state_dict"]
    size = state["visual.conv1.weight"].shape[-1] * int((state["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    if method == "coop":
        from clip import clip as oclip

        cfg = official_cfg("COOP", dict(N_CTX=N_CTX, CSC=False, CTX_INIT="", CLASS_TOKEN_POSITION="end"), size)
        theirs = official.CustomCLIP(cfg, classnames, oclip.build_model(dict(state)).float())
        freeze_all_but(theirs, "prompt_learner")
        step, trainer = official.CoOp.forward_backward, StandIn(cfg, theirs)
    elif method == "locoop":
        from clip_w_local import clip as oclip

        top_k = max(1, round(0.2 * len(classnames)))
        cfg = official_cfg("LOCOOP", dict(N_CTX=N_CTX, CSC=False, CTX_INIT="", CLASS_TOKEN_POSITION="end"), size,
                           lambda_value=LOCOOP_LAMBDA, topk=top_k)
        theirs = official.CustomCLIP(cfg, classnames, oclip.build_model(dict(state)).float())
        freeze_all_but(theirs, "prompt_learner")
        step = official.LoCoOp.forward_backward
        trainer = StandIn(cfg, theirs, top_k=top_k, lambda_value=LOCOOP_LAMBDA)
    elif method == "plot":
        from clip import clip as oclip

        cfg = official_cfg("PLOT", dict(N_CTX=N_CTX, CSC=False, CTX_INIT="", CLASS_TOKEN_POSITION="end", N=PLOT_N),
                           size)
        clip_model = oclip.build_model(dict(state)).float()
        theirs = official.CustomCLIP(cfg, classnames, clip_model)
        theirs.image_encoder = ViTTokens(clip_model.visual)  # shim: the release reads ResNet outputs
        freeze_all_but(theirs, "prompt_learner")
        step, trainer = official.PLOT.forward_backward, StandIn(cfg, theirs)
    else:  # maple
        from clip import clip as oclip

        cfg = official_cfg("MAPLE", dict(N_CTX=MAPLE_N_CTX, CTX_INIT=MAPLE_INIT, PROMPT_DEPTH=MAPLE_DEPTH), size)
        design = {"trainer": "MaPLe", "vision_depth": 0, "language_depth": 0, "vision_ctx": 0, "language_ctx": 0,
                  "maple_length": MAPLE_N_CTX}
        theirs = official.CustomCLIP(cfg, classnames, oclip.build_model(dict(state), design)).float()
        freeze_all_but(theirs, "prompt_learner", "VPT")
        step, trainer = official.MaPLe.forward_backward, StandIn(cfg, theirs)
    theirs.train()
    ours, loss_fn, pairs = build_ours(method, clip_file, classnames, theirs)
    with torch.no_grad():
        for official_tensor, our_tensor in pairs:
            our_tensor.copy_(official_tensor.reshape(our_tensor.shape))
    assert isinstance(ours, nn.Module)
    return theirs, step, trainer, ours, loss_fn, pairs


def ViTTokens(visual):
    """PLOT on a ViT (shim): [1 + N, B, D], the class token then every patch token, each
    through ln_post and proj, sequence-first as the release's ResNet image encoder."""
    import torch
    import torch.nn as nn

    class Tokens(nn.Module):
        def __init__(self):
            super().__init__()
            self.visual = visual

        def forward(self, images):
            v = self.visual
            x = v.conv1(images).flatten(2).permute(0, 2, 1)
            cls = v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
            x = v.ln_pre(torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype))
            x = v.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
            return (v.ln_post(x) @ v.proj).permute(1, 0, 2)

    return Tokens()


def build_ours(method, clip_file, classnames, theirs):
    import torch.nn.functional as F

    from leclip.backbone import PromptLearner, load_clip, resolve_logit_scale
    from leclip.trainers.coop import PromptedCLIP
    from leclip.trainers.locoop import locoop_loss
    from leclip.trainers.maple import MaPLeModel
    from leclip.trainers.plot import PLOTModel

    clip_model = load_clip("ViT-B/16", path=clip_file, device="cpu")
    for p in clip_model.parameters():
        p.requires_grad_(False)
    scale = resolve_logit_scale(clip_model)
    official = learnable(theirs)

    def cross_entropy(out, labels):
        return F.cross_entropy(out["logits"], labels)

    if method in ("coop", "locoop"):
        local = "value" if method == "locoop" else None
        ours = PromptedCLIP(clip_model, PromptLearner(clip_model, classnames, n_ctx=N_CTX), scale, local=local)
        pairs = [(official["prompt_learner.ctx"], ours.prompt_learner.ctx)]
        if method == "coop":
            return ours, cross_entropy, pairs
        top_k = max(1, round(0.2 * len(classnames)))
        return ours, lambda out, y: locoop_loss(out["logits"], out["local_logits"], y, top_k, LOCOOP_LAMBDA), pairs
    if method == "plot":
        learner = PromptLearner(clip_model, classnames, n_ctx=N_CTX, n_sets=PLOT_N)
        ours = PLOTModel(clip_model, learner, scale)
        return ours, cross_entropy, [(official["prompt_learner.ctx"], learner.ctx)]
    ours = MaPLeModel(clip_model, classnames, MAPLE_N_CTX, MAPLE_INIT, MAPLE_DEPTH, scale)
    pairs = [(official["prompt_learner.ctx"], ours.prompt_learner.ctx),
             (official["prompt_learner.proj.weight"], ours.shallow_proj.weight),
             (official["prompt_learner.proj.bias"], ours.shallow_proj.bias)]
    for i, deep in enumerate(ours.deep_text):
        pairs.append((official[f"prompt_learner.compound_prompts_text.{i}"], deep))
    for i, proj in enumerate(ours.deep_proj):
        pairs.append((official[f"prompt_learner.compound_prompt_projections.{i}.weight"], proj.weight))
        pairs.append((official[f"prompt_learner.compound_prompt_projections.{i}.bias"], proj.bias))
    return ours, cross_entropy, pairs


def alternate_times(official_fn, our_fn, steps):
    """(official, ours) seconds per step: after a warm-up of each, the steps alternate
    between the two, and each side's fastest step counts. A shared machine's load only
    slows a step, so the fastest is the least disturbed, and alternating exposes both
    sides to the same load."""
    import torch

    def timed(fn):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter() - start

    official_fn(), our_fn()  # warm-up
    pairs = [(timed(official_fn), timed(our_fn)) for _ in range(steps)]
    return min(p[0] for p in pairs), min(p[1] for p in pairs)


def compare_one(method, path, dassl, batch, classes, steps, threads):
    """Runs in the child: both steps timed, outputs compared; returns a JSON-able dict."""
    root = osp.join(path, "plot-coop") if method == "plot" and osp.isdir(osp.join(path, "plot-coop")) else path
    for folder in (dassl, root):
        if folder:
            sys.path.insert(0, osp.abspath(folder))
    shims = ["cuda_on_cpu"] + (["half_is_identity"] if method == "maple" else []) + (
        ["PLOT ViT image tokens"] if method == "plot" else [])
    with cuda_on_cpu():  # LoCoOp builds a CUDA softmax at import time
        # the official module first, so that `clip` is its vendored package (LE-CLIP only
        # takes the tokenizer from `clip`); LE-CLIP's trainers are `leclip.trainers`
        official = __import__(f"trainers.{method}", fromlist=["CustomCLIP"])
    sys.path.insert(0, REPO)
    import torch

    import step_time  # the shared model shapes
    from leclip.backbone import random_clip, save_clip

    if threads:
        torch.set_num_threads(threads)
    names = (CLASSNAMES * (classes // len(CLASSNAMES) + 1))[:classes]
    names = [name if i < len(CLASSNAMES) else f"{name} {i // len(CLASSNAMES)}" for i, name in enumerate(names)]
    with tempfile.TemporaryDirectory() as tmp, cuda_on_cpu():
        clip_file = osp.join(tmp, "vitb16.pt")
        save_clip(random_clip(**step_time.SHAPES["vitb16"], seed=0), clip_file)  # fp16 weights
        with half_is_identity() if method == "maple" else contextlib.nullcontext():
            theirs, step, trainer, ours, loss_fn, pairs = build(method, official, clip_file, names)
            generator = torch.Generator().manual_seed(0)
            size = step_time.SHAPES["vitb16"]["image_resolution"]
            images = torch.randn(batch, 3, size, size, generator=generator)
            labels = torch.arange(batch) % classes
            data = {"img": images, "label": labels}
            ours.train()

            def our_step():
                for p in ours.parameters():
                    p.grad = None
                out = ours(images, ours.encode_classes())
                loss = loss_fn(out, labels)
                loss.backward()
                return loss

            losses = {}
            official_s, ours_s = alternate_times(lambda: step(trainer, data),
                                                 lambda: losses.update(ours=float(our_step())), steps)
            # the outputs, side by side: the gradients of each side's last timed step (no
            # update between steps), then one evaluation forward of each
            grads = max((a.grad - b.grad.reshape(a.grad.shape)).abs().max().item() for a, b in pairs)
            with torch.no_grad():
                theirs.eval()
                official_out = theirs(images)
                official_loss = trainer_loss(method, official, official_out, labels, trainer)
                official_logits = official_out[0] if isinstance(official_out, tuple) else official_out
                our_logits = ours(images, ours.encode_classes())["logits"]
    return {
        "method": method, "official_s": official_s, "ours_s": ours_s, "ratio": ours_s / official_s,
        "logits_diff": (official_logits - our_logits).abs().max().item(),
        "loss_diff": abs(official_loss - losses["ours"]), "grad_diff": grads, "shims": shims,
        "batch": batch, "classes": classes, "threads": torch.get_num_threads(),
    }


def trainer_loss(method, official, out, labels, trainer):
    """The official loss of this batch from its evaluation outputs `out` (the training
    forward of these four methods has no dropout: the same outputs)."""
    import torch.nn.functional as F

    if method != "locoop":
        return float(F.cross_entropy(out, labels))
    logits, local = out
    with cuda_on_cpu():
        entropy = official.entropy_select_topk(local.reshape(-1, local.shape[-1]), trainer.top_k, labels,
                                               local.shape[1])
    return float(F.cross_entropy(logits, labels) - trainer.lambda_value * entropy)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for method in METHODS:
        parser.add_argument(f"--{method}", metavar="PATH", help=f"your clone of the official {method} repository")
    parser.add_argument("--dassl", metavar="PATH", help="a Dassl.pytorch clone, if Dassl is not installed")
    parser.add_argument("--batch", type=int, nargs="+", default=[8])
    parser.add_argument("--classes", type=int, nargs="+", default=[16])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: the child of one method
    args = parser.parse_args(argv)
    if args.one:
        result = compare_one(args.one, getattr(args, args.one), args.dassl, args.batch[0], args.classes[0],
                             args.steps, args.threads)
        print("RESULT " + json.dumps(result))
        return 0
    print(f"ViT-B/16-shaped random CLIP | {args.steps} timed steps each, alternating (fastest, after a warm-up) "
          "| fp32")
    print(f"{'method':<8}{'batch':>6}{'classes':>8}{'official (s)':>13}{'ours (s)':>10}{'ours/official':>15}"
          f"{'logits':>10}{'loss':>10}{'grads':>10}  shims")
    methods = []
    for method in METHODS:
        path = getattr(args, method)
        if not path:
            print(f"{method:<8}skipped: no --{method} PATH given")
        elif not osp.isdir(path):
            print(f"{method:<8}skipped: {path} is not a folder")
        else:
            methods.append((method, path))
    for classes in args.classes:  # one shape for every method, then the next
        for batch in args.batch:
            for method, path in methods:
                run_child(args, method, path, batch, classes)
    return 0


def run_child(args, method, path, batch, classes):
    """One method at one shape in a child process; prints its row."""
    command = [sys.executable, __file__, "--one", method, f"--{method}", path, "--batch", str(batch),
               "--classes", str(classes), "--steps", str(args.steps), "--threads", str(args.threads)]
    if args.dassl:
        command += ["--dassl", args.dassl]
    done = subprocess.run(command, capture_output=True, text=True, cwd=HERE)
    found = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not found:
        print(f"{method:<8}{batch:>6}{classes:>8}  failed:\n{done.stderr[-2500:]}")
        return
    r = json.loads(found[-1][len("RESULT "):])
    print(f"{method:<8}{batch:>6}{classes:>8}{r['official_s']:>13.3f}{r['ours_s']:>10.3f}{r['ratio']:>14.2f}x"
          f"{r['logits_diff']:>10.1e}{r['loss_diff']:>10.1e}{r['grad_diff']:>10.1e}  {', '.join(r['shims'])}",
          flush=True)


if __name__ == "__main__":
    sys.exit(main())
