"""How each baseline trainer wires its parts, on a tiny random CLIP and no data.

The parts (prompt learners, encoders, LoCoOp's regions, PLOT's transport, the adapter,
LoRA, FixMatch's step) are tested against hand computations elsewhere; here the real
trainer (its config keys, `build_model`, `compute_loss`, `encode_classes`, `predict`)
must equal a hand composition of those parts, term by term: each loss weight scales its
own term only, each term gets the labels and views the method says, the gradient reaches
the learnable tensors the method names and nothing of the frozen CLIP, and predict is
the documented inference rule (docs/METHODS.md). Each key reaching its part: test_wiring_keys.py.
"""
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from leclip import catalogue, evaluators, ssl
from leclip.adapters import ResidualAdapter
from leclip.backbone import DeepTokens, ImageEncoder, ReplaceAt, TextEncoder, class_text_features, random_clip
from leclip.backbone.loader import load_clip
from leclip.dassl import TRAINER_REGISTRY
from leclip.ot import ot_similarity
from leclip.trainers.locoop import non_label_region_entropy

CLASSES = ["crimson disc", "navy square", "olive ring", "amber star", "teal cross"]
SCALE = 37.0  # TRAINER.LOGIT_SCALE: no recipe's value, so the key must reach the logits
TOL = dict(rtol=1e-5, atol=1e-5)
LEARNERS = ["LECoOp", "LELoCoOp", "LEPLOT", "LEMaPLe", "LECLIPAdapter", "LECLIPLoRA"]
# what each trainer learns (names in trainer.model); everything else is frozen
LEARNABLE = {
    "LECoOp": {"prompt_learner.ctx"},
    "LELoCoOp": {"prompt_learner.ctx"},
    "LEPLOT": {"prompt_learner.ctx"},
    "LEMaPLe": {"prompt_learner.ctx", "deep_text.0", "shallow_proj.weight", "shallow_proj.bias",
                "deep_proj.0.weight", "deep_proj.0.bias"},
    "LECLIPAdapter": {"adapter.fc.0.weight", "adapter.fc.2.weight"},
    "LECLIPLoRA": {f"lora.{i}.{m}.{p}" for i in range(4) for m in "AB" for p in "qkv"},
}


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    """A tiny CLIP checkpoint (2 + 2 blocks, 32 px, 16 patches) read by the trainers' own load_clip."""
    model = random_clip(vision_layers=2, transformer_layers=2, context_length=24, seed=5)
    path = tmp_path_factory.mktemp("clip") / "tiny.pt"
    torch.save({"state_dict": model.state_dict(), "meta": {"text_heads": 2}}, path)
    return str(path)


def build(backbone, tmp_path, name, opts=(), task="ossl"):
    """The registered trainer `name` built from its synth recipe + opts, with a stand-in
    dataset (the class names and the task) instead of loaders."""

    class NoData(TRAINER_REGISTRY.get(name)):
        def build_data_loader(self):
            self.dm = SimpleNamespace(dataset=SimpleNamespace(classnames=list(CLASSES), task=task))
            self.task, self.num_classes, self.lab2cname = task, len(CLASSES), dict(enumerate(CLASSES))
            self.train_loader_x = self.train_loader_u = self.val_loader = self.test_loader = None
            evaluators.name_in_cfg(task, self.cfg)  # as CLIPTrainer.build_data_loader ends

    opts = ["MODEL.BACKBONE.PATH", backbone, "INPUT.SIZE", "(32, 32)", "TRAINER.LOGIT_SCALE", str(SCALE)] + list(opts)
    cfg = catalogue.setup_cfg(
        f"{catalogue.REPO}/configs/trainers/{name}/synth.yaml", catalogue.dataset_config("synth_fg"), opts,
        output_dir=str(tmp_path / f"{name}-{len(list(tmp_path.iterdir()))}"), seed=1,
    )
    trainer = NoData(cfg)
    trainer.set_model_mode("train")
    return trainer


def fresh_clip(backbone):
    return load_clip("", path=backbone).requires_grad_(False)


def perturb_(module, seed=2, std=0.05):
    """Move every learnable tensor off its init (LoRA's B starts at 0, which hides A)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.requires_grad:
                p.add_(std * torch.randn(p.shape, generator=g).to(p.device))


def images(trainer, seed, batch=4):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, 32, 32, generator=g).to(trainer.device)


def labeled_batch(trainer, labels=(0, 3, 1, 4)):
    return {"img": images(trainer, 10), "label": torch.tensor(labels).to(trainer.device)}


def cosine_logits(image, text):
    return SCALE * F.normalize(image.float(), dim=-1) @ F.normalize(text.float(), dim=-1).t()


# ---------------------------------------------------------------- the class side of each trainer
def prompt_text(trainer):
    """CoOp's / LoCoOp's class side: the text tower on the learner's prompts, normalised per class."""
    return F.normalize(TextEncoder(trainer.clip_model)(*trainer.model.prompt_learner()), dim=-1)


def maple_hooks(model):
    text = ReplaceAt({j + 1: model.deep_text[j] for j in range(model.depths["text"] - 1)}, start=1)
    vision = {-1: model.shallow_proj(model.prompt_learner.ctx)}
    vision.update({j + 1: proj(model.deep_text[j]) for j, proj in enumerate(model.deep_proj)})
    return text, DeepTokens(vision, mode="replace")


def hand_logits(trainer, name, x):
    """{"logits", ...} of each method written from its parts (docs/METHODS.md)."""
    clip_model, model = trainer.clip_model, trainer.model
    template = trainer.cfg.DATASET.PROMPT_TEMPLATE
    if name == "LEZeroshotCLIP":
        text = class_text_features(clip_model, CLASSES, template, device=trainer.device)
        return {"logits": cosine_logits(clip_model.encode_image(x), text)}
    if name in ("LECoOp", "LELoCoOp"):
        text = prompt_text(trainer)
        out = {"logits": cosine_logits(clip_model.encode_image(x), text)}
        if name == "LELoCoOp":
            _, local = ImageEncoder(clip_model)(x, local=trainer.cfg.TRAINER.LOCOOP.LOCAL_FEATURES)
            out["local_logits"] = SCALE * F.normalize(local, dim=-1) @ text.t()  # [B, N, C]
        return out
    if name == "LEPLOT":
        plot = trainer.cfg.TRAINER.PLOT
        prompts = TextEncoder(clip_model)(*model.prompt_learner())  # set-major: set s, class c at s * C + c
        _, patches = ImageEncoder(clip_model)(x)
        return {"logits": SCALE * ot_similarity(patches, prompts.view(plot.N, len(CLASSES), -1), plot.EPS, plot.MAX_ITER)}
    if name == "LEMaPLe":
        text_hook, vision_hook = maple_hooks(model)
        text = TextEncoder(clip_model)(*model.prompt_learner(), token_hook=text_hook)
        image, _ = ImageEncoder(clip_model)(x, token_hook=vision_hook, patches=False)
        return {"logits": cosine_logits(image, text)}
    if name == "LECLIPAdapter":
        cfg = trainer.cfg.TRAINER.CLIP_ADAPTER
        adapter = ResidualAdapter(clip_model.text_projection.shape[1], cfg.REDUCTION, cfg.RATIO).to(trainer.device)
        adapter.load_state_dict(model.adapter.state_dict())  # REDUCTION fixes the shapes
        adapter.fc[0].weight = model.adapter.fc[0].weight  # the trainer's tensors, so gradients compare
        adapter.fc[2].weight = model.adapter.fc[2].weight
        text = class_text_features(clip_model, CLASSES, template, device=trainer.device)
        return {"logits": cosine_logits(adapter(clip_model.encode_image(x).float()), text)}
    if name == "LECLIPLoRA":
        lora_template = trainer.cfg.TRAINER.CLIP_LORA.TEMPLATE or template
        tokens = TextEncoder(clip_model).tokenize([lora_template.format(c) for c in CLASSES]).to(trainer.device)
        return {"logits": cosine_logits(clip_model.encode_image(x), clip_model.encode_text(tokens))}
    raise KeyError(name)


def hand_supervised(trainer, name, batch):
    """The labeled term: H(y, p(x)); LoCoOp: minus LAMBDA times the entropy of the regions
    whose top-K (TOPK 0: 20% of the 5 classes, 1) misses the label."""
    out = hand_logits(trainer, name, batch["img"])
    loss = F.cross_entropy(out["logits"], batch["label"])
    if name == "LELoCoOp":
        loss = loss - trainer.cfg.TRAINER.LOCOOP.LAMBDA * non_label_region_entropy(out["local_logits"], batch["label"], 1)
    return loss


def grads_of(trainer, loss, *views):
    """The learnable tensors (their names in LEARNABLE) that the loss reaches among every
    parameter of the model, CLIP included, and whether each view (input images) gets a gradient."""
    params = {id(p): p for p in [*trainer.model.parameters(), *trainer.clip_model.parameters()]}
    names = {id(p): n for n, p in trainer.model.named_parameters(remove_duplicate=False)}
    for p in params.values():
        p.grad = None
    loss.backward()
    reached = {names.get(i, "frozen CLIP") for i, p in params.items() if p.grad is not None and p.grad.abs().sum() > 0}
    return reached, [v.grad is not None and v.grad.abs().sum().item() > 0 for v in views]


def optimised(trainer):
    ids = {id(p) for group in trainer.optim.param_groups for p in group["params"]}
    return {n for n, p in trainer.model.named_parameters(remove_duplicate=False) if id(p) in ids and not n.startswith("clip_model.")}


# ---------------------------------------------------------------- one labeled step
VISION_ADAPTED = {"LEMaPLe", "LECLIPLoRA"}  # the others run the image tower without autograd


@pytest.mark.parametrize("name", LEARNERS)
def test_one_step_equals_the_hand_composition_and_trains_exactly_the_learnable_tensors(backbone, tmp_path, name):
    opts = ["TRAINER.CLIP_LORA.DROPOUT", "0.0"] if name == "LECLIPLoRA" else []
    trainer = build(backbone, tmp_path, name, opts)
    perturb_(trainer.model)
    batch = labeled_batch(trainer)
    batch["img"].requires_grad_(True)
    losses = trainer.compute_loss(batch, None)
    assert set(losses) == {"loss_x"}

    expected = hand_supervised(trainer, name, {"img": batch["img"].detach(), "label": batch["label"]})
    assert torch.allclose(losses["loss_x"], expected, **TOL)

    reached, (view,) = grads_of(trainer, losses["loss_x"], batch["img"])
    assert reached == LEARNABLE[name] == optimised(trainer)
    assert view == (name in VISION_ADAPTED)


@pytest.mark.parametrize("name", LEARNERS)
def test_the_gradient_is_the_hand_compositions(backbone, tmp_path, name):
    opts = ["TRAINER.CLIP_LORA.DROPOUT", "0.0"] if name == "LECLIPLoRA" else []
    trainer = build(backbone, tmp_path, name, opts)
    perturb_(trainer.model)
    batch = labeled_batch(trainer)
    params = [p for group in trainer.optim.param_groups for p in group["params"]]
    got = torch.autograd.grad(trainer.compute_loss(batch, None)["loss_x"], params)
    for a, b in zip(got, torch.autograd.grad(hand_supervised(trainer, name, batch), params)):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4 * b.abs().max().item())


# ---------------------------------------------------------------- LoCoOp's keys and labels
def test_locoop_lambda_and_top_k_reach_their_term_only(backbone, tmp_path):
    base = build(backbone, tmp_path, "LELoCoOp")
    perturb_(base.model)
    state = base.model.prompt_learner.state_dict()
    batch = labeled_batch(base)
    out = hand_logits(base, "LELoCoOp", batch["img"])
    ce = F.cross_entropy(out["logits"], batch["label"])
    entropies = {k: non_label_region_entropy(out["local_logits"], batch["label"], k) for k in (1, 2)}
    assert entropies[1] != entropies[2]  # the regions differ with K
    for lam, top_k in ((0.25, 0), (0.7, 0), (0.25, 2), (0.0, 2)):
        trainer = build(backbone, tmp_path, "LELoCoOp", ["TRAINER.LOCOOP.LAMBDA", str(lam), "TRAINER.LOCOOP.TOPK", str(top_k)])
        trainer.model.prompt_learner.load_state_dict(state)
        loss = trainer.compute_loss(batch, None)["loss_x"]
        assert torch.allclose(loss, ce - lam * entropies[top_k or 1], **TOL), (lam, top_k)


def test_locoop_regions_are_chosen_by_each_images_own_label(backbone, tmp_path):
    """The entropy term reads the labels: another labelling changes the regions, not the CE alone."""
    trainer = build(backbone, tmp_path, "LELoCoOp", ["TRAINER.LOCOOP.LAMBDA", "1.0"])
    perturb_(trainer.model)
    batch = labeled_batch(trainer)
    out = hand_logits(trainer, "LELoCoOp", batch["img"])
    for labels in ([0, 3, 1, 4], [2, 2, 0, 1]):
        labels = torch.tensor(labels).to(trainer.device)
        loss = trainer.compute_loss({"img": batch["img"], "label": labels}, None)["loss_x"]
        ce = F.cross_entropy(out["logits"], labels)
        assert torch.allclose(ce - loss, non_label_region_entropy(out["local_logits"], labels, 1), **TOL)


@pytest.mark.parametrize("local", ["value", "tokens"])
def test_locoop_local_features_key(backbone, tmp_path, local):
    trainer = build(backbone, tmp_path, "LELoCoOp", ["TRAINER.LOCOOP.LOCAL_FEATURES", local])
    x = images(trainer, 3)
    got = trainer.model(x, trainer.encode_classes())["local_logits"]
    assert torch.allclose(got, hand_logits(trainer, "LELoCoOp", x)["local_logits"], **TOL)


# ---------------------------------------------------------------- FixMatch on every learner
def fixmatch_trainer(backbone, tmp_path, name, lam, conf):
    opts = ["TRAINER.SSL.MODE", "fixmatch", "TRAINER.SSL.LAMBDA", str(lam), "TRAINER.SSL.CONF_THRESH", str(conf),
            "TRAINER.SSL.OOD_QUANTILE", "0.25"]
    if name == "LECLIPLoRA":
        opts += ["TRAINER.CLIP_LORA.DROPOUT", "0.0"]
    trainer = build(backbone, tmp_path, name, opts)
    trainer.before_train()  # builds the FixMatch step
    perturb_(trainer.model)
    return trainer


def hand_fixmatch(trainer, name, batch_x, batch_u, lam, conf):
    """lam * mean over the batch of F(u) * H(argmax p(weak), p(strong)); F: confidence >= conf
    and MCM(weak) >= the 0.25 quantile of the labeled batch's MCM (first step: no average)."""
    with torch.no_grad():
        weak = hand_logits(trainer, name, batch_u["img_weak"])["logits"]
        threshold = torch.quantile(ssl.mcm(hand_logits(trainer, name, batch_x["img"])["logits"] / SCALE), 0.25)
    confidence, pseudo = weak.softmax(dim=-1).max(dim=-1)
    mask = (confidence >= conf) & (ssl.mcm(weak / SCALE) >= threshold)
    strong = hand_logits(trainer, name, batch_u["img_strong"])["logits"]
    return lam * (F.cross_entropy(strong, pseudo, reduction="none") * mask).mean(), mask


def unlabeled_batch(trainer, batch_x):
    """weak: two labeled images and two others; strong: four other images."""
    weak = torch.cat([batch_x["img"][:2], images(trainer, 11, 2)])
    return {"img_weak": weak, "img_strong": images(trainer, 12).requires_grad_(True), "label": torch.tensor([0, 1, 7, 8])}


def median_confidence(backbone, tmp_path, name):
    """A confidence threshold that keeps some weak-view images and drops others."""
    trainer = fixmatch_trainer(backbone, tmp_path, name, 1.0, 0.0)
    with torch.no_grad():
        weak = hand_logits(trainer, name, unlabeled_batch(trainer, labeled_batch(trainer))["img_weak"])["logits"]
    confidence = weak.softmax(dim=-1).amax(dim=-1).sort().values
    return (confidence[1] + confidence[2]).item() / 2  # half-way: no image sits on the threshold


@pytest.mark.parametrize("name", LEARNERS)
def test_fixmatch_step_pseudo_labels_the_weak_view_and_trains_on_the_strong_one(backbone, tmp_path, name):
    conf = median_confidence(backbone, tmp_path, name)
    for lam in (1.0, 0.4):
        trainer = fixmatch_trainer(backbone, tmp_path, name, lam, conf)
        batch_x = labeled_batch(trainer)
        batch_u = unlabeled_batch(trainer, batch_x)
        losses = trainer.compute_loss(batch_x, batch_u)
        assert set(losses) == {"loss_x", "loss_u"}
        expected, mask = hand_fixmatch(trainer, name, batch_x, batch_u, lam, conf)
        assert 0 < mask.sum() < len(mask), "the filter must keep some images and drop others"
        assert torch.allclose(losses["loss_u"], expected, **TOL), lam
        assert torch.allclose(losses["loss_x"], hand_supervised(trainer, name, batch_x), **TOL)  # SSL.LAMBDA: not here
        reached, (strong,) = grads_of(trainer, losses["loss_u"], batch_u["img_strong"])
        assert reached == LEARNABLE[name] and strong == (name in VISION_ADAPTED)


# ---------------------------------------------------------------- the class side and predict
def test_encode_classes_is_the_documented_normalised_class_side(backbone, tmp_path):
    template = "a {} on a plain ground."
    opts = ["DATASET.PROMPT_TEMPLATE", template]
    for name in ("LEZeroshotCLIP", "LECLIPAdapter"):
        trainer = build(backbone, tmp_path, name, opts + (["OPTIM.MAX_EPOCH", "0"] if name == "LEZeroshotCLIP" else []))
        tokens = TextEncoder(trainer.clip_model).tokenize([template.format(c) for c in CLASSES]).to(trainer.device)
        expected = F.normalize(trainer.clip_model.encode_text(tokens), dim=-1)
        assert torch.allclose(trainer.encode_classes(), expected, **TOL), name
    for name in ("LECoOp", "LELoCoOp"):
        trainer = build(backbone, tmp_path, name)
        perturb_(trainer.model)
        assert torch.allclose(trainer.encode_classes(), prompt_text(trainer), **TOL), name
    trainer = build(backbone, tmp_path, "LECLIPLoRA", ["TRAINER.CLIP_LORA.DROPOUT", "0.0"])
    perturb_(trainer.model)
    tokens = TextEncoder(trainer.clip_model).tokenize([f"a photo of a {c}." for c in CLASSES]).to(trainer.device)
    assert torch.allclose(trainer.encode_classes(), F.normalize(trainer.clip_model.encode_text(tokens), dim=-1), **TOL)
    trainer = build(backbone, tmp_path, "LEMaPLe")
    perturb_(trainer.model)
    text, _ = trainer.encode_classes()
    hook, _ = maple_hooks(trainer.model)
    expected = F.normalize(TextEncoder(trainer.clip_model)(*trainer.model.prompt_learner(), token_hook=hook), dim=-1)
    assert torch.allclose(text, expected, **TOL)
    trainer = build(backbone, tmp_path, "LEPLOT", ["TRAINER.PLOT.N", "3"])
    perturb_(trainer.model)
    prompts = TextEncoder(trainer.clip_model)(*trainer.model.prompt_learner())
    assert torch.allclose(trainer.encode_classes(), prompts.view(3, len(CLASSES), -1), **TOL)  # set-major [N, C, D]


@pytest.mark.parametrize("name", ["LEZeroshotCLIP"] + LEARNERS)
def test_predict_is_the_documented_rule(backbone, tmp_path, name):
    """MSP of the softmax over the classes; LoCoOp: GL-MCM on the cosines (logits / s)."""
    opts = ["OPTIM.MAX_EPOCH", "0"] if name == "LEZeroshotCLIP" else []
    trainer = build(backbone, tmp_path, name, opts)
    perturb_(trainer.model)
    trainer.set_model_mode("eval")
    x = images(trainer, 9)
    with torch.no_grad():
        probs, score = trainer.predict(x, trainer.encode_classes())
        out = hand_logits(trainer, name, x)
    expected = out["logits"].softmax(dim=-1)
    assert torch.allclose(probs, expected, **TOL)
    if name == "LELoCoOp":
        cos_local = out["local_logits"] / SCALE
        expected_score = (out["logits"] / SCALE).softmax(-1).amax(-1) + cos_local.softmax(-1).amax(dim=(1, 2))
    else:
        expected_score = expected.amax(dim=-1)
    assert torch.allclose(score, expected_score, **TOL)


def test_zero_shot_multilabel_positives_are_the_top_k(backbone, tmp_path):
    trainer = build(backbone, tmp_path, "LEZeroshotCLIP", ["OPTIM.MAX_EPOCH", "0", "TRAINER.ZSCLIP.TOPK_POSITIVES", "2"],
                    task="multilabel")
    x = images(trainer, 9)
    with torch.no_grad():
        scores, positives = trainer.predict(x, trainer.encode_classes())
        expected = hand_logits(trainer, "LEZeroshotCLIP", x)["logits"].softmax(dim=-1)
    assert torch.allclose(scores, expected, **TOL)
    top2 = scores.topk(2, dim=-1).indices
    assert positives.dtype == torch.bool and positives.sum(dim=-1).tolist() == [2] * len(x)
    assert all(positives[i, top2[i]].all() for i in range(len(x)))


# ---------------------------------------------------------------- the shared step around compute_loss
@pytest.mark.parametrize("last_batch", [False, True])
def test_forward_backward_steps_on_the_sum_of_the_terms(backbone, tmp_path, last_batch):
    """One step = SGD (no momentum, no decay) on loss_x + loss_u; the summary reports each term
    and their sum; the learning rate moves after the epoch's last batch only."""
    conf = median_confidence(backbone, tmp_path, "LECoOp")
    opts = ["TRAINER.SSL.MODE", "fixmatch", "TRAINER.SSL.CONF_THRESH", str(conf), "TRAINER.SSL.OOD_QUANTILE", "0.25",
            "OPTIM.MOMENTUM", "0.0", "OPTIM.WEIGHT_DECAY", "0.0", "OPTIM.WARMUP_EPOCH", "0"]
    trainer = build(backbone, tmp_path, "LECoOp", opts)
    trainer.before_train()
    perturb_(trainer.model)
    batch_x = labeled_batch(trainer)
    batch_u = unlabeled_batch(trainer, batch_x)
    twin = fixmatch_trainer(backbone, tmp_path, "LECoOp", 1.0, conf)  # the same state, for the hand gradient
    losses = twin.compute_loss(batch_x, batch_u)
    ctx = twin.model.prompt_learner.ctx
    grad, = torch.autograd.grad(losses["loss_x"] + losses["loss_u"], ctx)
    lr = trainer.get_current_lr()
    assert lr == trainer.cfg.OPTIM.LR
    trainer.batch_idx, trainer.num_batches = (1, 2) if last_batch else (0, 2)
    summary = trainer.forward_backward(batch_x, batch_u)
    assert set(summary) == {"loss_x", "loss_u", "loss"}
    assert summary["loss_x"] == pytest.approx(losses["loss_x"].item(), rel=1e-5)
    assert summary["loss_u"] == pytest.approx(losses["loss_u"].item(), rel=1e-5)
    assert summary["loss"] == pytest.approx(summary["loss_x"] + summary["loss_u"], rel=1e-6)
    assert torch.allclose(trainer.model.prompt_learner.ctx, ctx - lr * grad, atol=1e-6)
    assert (trainer.get_current_lr() != lr) == last_batch


def same(a, b):
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if torch.is_tensor(a):
        return torch.is_tensor(b) and torch.equal(a, b)
    return a == b


def test_the_filter_threshold_survives_in_the_trainer_state(backbone, tmp_path):
    """A step moves the filter's threshold; a trainer loaded with that state holds it."""
    conf = median_confidence(backbone, tmp_path, "LECoOp")
    first, resumed = (fixmatch_trainer(backbone, tmp_path, "LECoOp", 1.0, conf) for _ in range(2))
    untrained = first.trainer_state()
    batch_x = labeled_batch(first)
    first.compute_loss(batch_x, unlabeled_batch(first, batch_x))
    assert not same(first.trainer_state(), untrained)
    resumed.load_trainer_state(first.trainer_state())
    assert same(resumed.trainer_state(), first.trainer_state())


def test_model_inference_is_predicts_probabilities(backbone, tmp_path):
    trainer = build(backbone, tmp_path, "LECoOp")
    trainer.set_model_mode("eval")
    x = images(trainer, 14)
    with torch.no_grad():
        assert torch.allclose(trainer.model_inference(x), hand_logits(trainer, "LECoOp", x)["logits"].softmax(-1), **TOL)



@pytest.mark.parametrize("task,evaluator", [("ossl", "OpenSetClassification"), ("closed", "Classification"),
                                            ("multilabel", "MultiLabelClassification")])
def test_the_evaluator_follows_the_task(backbone, tmp_path, task, evaluator):
    trainer = build(backbone, tmp_path, "LEZeroshotCLIP", ["OPTIM.MAX_EPOCH", "0"], task=task)
    assert type(trainer.evaluator).__name__ == evaluator
    if task == "ossl":  # the open-set metrics count the ID classes from the class names
        assert trainer.evaluator.num_id == len(CLASSES)
