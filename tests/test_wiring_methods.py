"""How CSA and CFSG-CLIP wire their tested parts: one step's losses against a hand
composition, term by term; each loss-weight key scales its own term only; what each head
reads; where the gradient goes; the inference rule.

The trainers are built without data (`object.__new__` plus the attributes a step reads)
on a small random CLIP, so each check runs in well under a second.
"""
import functools
import math

import pytest
import torch
import torch.nn.functional as F

from leclip import ssl
from leclip.backbone import random_clip
from leclip.dassl import get_cfg_default
from leclip.multilabel import asl, contexts, dual_prompts
from leclip.trainers.cfsg import CFSG, CFSGModel
from leclip.trainers.csa import CSA, CSAModel, PseudoLabels

CLASSES = ["crimson disc", "navy square", "olive ring", "amber star"]
CLASS_CONTEXT = [0, 1, 0, contexts.NO_CONTEXT]  # "amber star" has no context


@pytest.fixture(scope="module")
def clip_model():
    # 32 px, patch 8 -> 16 patches; 3 vision blocks; joint space 32
    return random_clip(vision_layers=3, context_length=24, seed=7).requires_grad_(False)


def images(n, seed):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


# ================================================================ CSA
def csa_trainer(clip_model, **overrides):
    cfg = get_cfg_default()
    csa = cfg.TRAINER.CSA
    csa.N_CTX, csa.N_CONTEXTS = 4, 2
    for key, value in overrides.items():
        csa[key] = value
    trainer = object.__new__(CSA)
    trainer.cfg, trainer.device = cfg, torch.device("cpu")
    trainer.class_context = torch.tensor(CLASS_CONTEXT).numpy()
    torch.manual_seed(0)
    n_contexts = csa.N_CONTEXTS if csa.CONTEXT else 0
    trainer.model = CSAModel(clip_model, CLASSES, csa, clip_model.logit_scale.exp().item(), n_contexts)
    # the context head starts at 0: give it weights so that its logits differ per image
    with torch.no_grad():
        for p in trainer.model.learnable["context_head"].parameters() if csa.CONTEXT else ():
            p.normal_(0, 0.5)
    trainer.unlabeled = PseudoLabels(trainer)  # as if its epoch pass had run:
    trainer.unlabeled.pseudo = torch.tensor([[1.0, 0, 0, 1], [0, 1, 1, 0], [1, 1, 0, 0], [0, 0, 0, 1], [0, 1, 0, 1]])
    trainer.unlabeled.thresholds = torch.tensor([0.5, 0.4, 0.6, 0.5])
    return trainer


def csa_batches():
    # context targets {0}, {1}, {0, 1}: each image's own
    batch_x = {"img": images(3, 1), "label": torch.tensor([[1.0, 0, 1, 0], [0, 1, 0, 0], [0, 1, 1, 1]])}
    # rows 3, 0, 4 of the epoch's pseudo-labels; "label" holds the hidden labels (diagnostics only)
    batch_u = {"img": images(3, 2), "index": torch.tensor([3, 0, 4]),
               "label": torch.tensor([[0.0, 0, 0, 1], [1, 0, 0, 0], [0, 1, 1, 1]])}
    return batch_x, batch_u


def csa_hand_losses(trainer, batch_x, batch_u, targets_u):
    cfg, model = trainer.cfg.TRAINER.CSA, trainer.model
    classes = model.encode_classes()

    def asl_loss(logits, targets):
        return asl.asymmetric_loss(logits, targets, gamma_pos=cfg.ASL_GAMMA_POS, gamma_neg=cfg.ASL_GAMMA_NEG,
                                   clip=cfg.ASL_CLIP)

    def context(out, labels):
        targets = contexts.context_targets(labels, CLASS_CONTEXT, cfg.N_CONTEXTS)
        return cfg.CONTEXT_WEIGHT * contexts.context_loss(out["context_logits"], targets)

    out_x, out_u = model(batch_x["img"], classes), model(batch_u["img"], classes)
    return {
        "loss_x": asl_loss(out_x["logits"], batch_x["label"]),
        "loss_ctx_x": context(out_x, batch_x["label"]),
        "loss_u": cfg.LAMBDA_U * asl_loss(out_u["logits"], targets_u),
        "loss_ctx_u": context(out_u, targets_u),
    }


def assert_weight_scales_its_terms(build, batches, key, value, scaled):
    """One step's terms with `key` set to `value`: each named in `scaled` times its factor,
    every other term unchanged."""
    base = build().compute_loss(*batches)
    changed = build(**{key: value}).compute_loss(*batches)
    for name in base:
        assert torch.allclose(changed[name], scaled.get(name, 1.0) * base[name], rtol=1e-5), name


def assert_same_terms(losses, hand):
    assert set(losses) == set(hand)
    for name in hand:
        assert torch.allclose(losses[name], hand[name], rtol=1e-5, atol=1e-6), name


def test_csa_step_is_asl_and_context_loss_on_labels_and_epoch_pseudo_labels(clip_model):
    trainer = csa_trainer(clip_model)
    batch_x, batch_u = csa_batches()
    losses = trainer.compute_loss(batch_x, batch_u)
    expected = csa_hand_losses(trainer, batch_x, batch_u, trainer.unlabeled.pseudo[batch_u["index"]])
    assert_same_terms(losses, expected)
    assert losses["loss_ctx_x"] > 0 and losses["loss_ctx_u"] > 0
    # the diagnostics count the labels the loss used against the hidden ones
    used, hidden, counter = trainer.unlabeled.pseudo[batch_u["index"]], batch_u["label"], trainer.unlabeled.quality
    assert counter.true_pos == int((used * hidden).sum())
    assert (counter.predicted, counter.actual) == (int(used.sum()), int(hidden.sum()))


def test_csa_step_schedule_thresholds_the_current_scores(clip_model):
    trainer = csa_trainer(clip_model, PL_SCHEDULE="step")
    batch_x, batch_u = csa_batches()
    with torch.no_grad():
        scores = trainer.model(batch_u["img"], trainer.model.encode_classes())["logits"].sigmoid()
    trainer.unlabeled.thresholds = scores.median(dim=0).values  # a mix of positives and negatives per class
    targets = (scores >= trainer.unlabeled.thresholds).float()
    assert not torch.equal(targets, trainer.unlabeled.pseudo[batch_u["index"]])
    losses = trainer.compute_loss(batch_x, batch_u)
    assert_same_terms(losses, csa_hand_losses(trainer, batch_x, batch_u, targets))


def test_csa_labeled_only_step_has_no_unlabeled_terms(clip_model):
    trainer = csa_trainer(clip_model, CONTEXT=False)
    batch_x, _ = csa_batches()
    losses = trainer.compute_loss(batch_x, None)
    assert set(losses) == {"loss_x"}


@pytest.mark.parametrize(
    "key, value, scaled",
    [("LAMBDA_U", 3.0, {"loss_u": 3.0}), ("CONTEXT_WEIGHT", 2.0, {"loss_ctx_x": 4.0, "loss_ctx_u": 4.0})],
)
def test_csa_each_loss_weight_scales_its_own_terms(clip_model, key, value, scaled):
    assert_weight_scales_its_terms(functools.partial(csa_trainer, clip_model), csa_batches(), key, value, scaled)


@pytest.mark.parametrize("key, value", [("ASL_GAMMA_NEG", 1.0), ("ASL_GAMMA_POS", 1.0), ("ASL_CLIP", 0.0)])
def test_csa_asl_keys_reach_both_asl_terms(clip_model, key, value):
    batch_x, batch_u = csa_batches()
    base = csa_trainer(clip_model).compute_loss(batch_x, batch_u)
    trainer = csa_trainer(clip_model, **{key: value})
    changed = trainer.compute_loss(batch_x, batch_u)
    expected = csa_hand_losses(trainer, batch_x, batch_u, trainer.unlabeled.pseudo[batch_u["index"]])
    assert_same_terms(changed, expected)
    assert not torch.allclose(changed["loss_x"], base["loss_x"])
    assert not torch.allclose(changed["loss_u"], base["loss_u"])


def test_csa_context_head_reads_the_label_specific_features_or_the_global_feature(clip_model):
    x = images(2, 3)
    for source in ("label_features", "global"):
        model = csa_trainer(clip_model, CONTEXT_INPUT=source).model
        with torch.no_grad():
            classes = model.encode_classes()
            global_feature, patches = model.image_encoder(x, patches=True)
            adapter = model.learnable["adapter"]
            global_feature, patches = adapter(global_feature), adapter(patches)
            _, features, _ = dual_prompts.label_specific_dual_logits(
                patches, *classes, model.logit_scale, model.tau, model.pool_negatives
            )
            expected = model.learnable["context_head"](features if source == "label_features" else global_feature)
            assert torch.allclose(model(x, classes)["context_logits"], expected, atol=1e-5)


def learned(model, loss):
    """Names of the learnable parameters that the loss's gradient reaches."""
    model.zero_grad()
    loss.backward()
    return {name.split(".")[0] for name, p in model.learnable.named_parameters()
            if p.grad is not None and p.grad.abs().sum() > 0}


def test_csa_gradients_reach_what_each_loss_says(clip_model):
    batch_x, batch_u = csa_batches()
    everything = {"positive_prompts", "negative_prompts", "adapter", "context_head"}
    trainer = csa_trainer(clip_model)
    assert learned(trainer.model, trainer.compute_loss(batch_x, batch_u)["loss_x"]) == everything - {"context_head"}
    # the context task shapes the features that make the class scores: adapter and the
    # positive prompts that pool them (the negative prompts do not pool)
    context = learned(trainer.model, trainer.compute_loss(batch_x, batch_u)["loss_ctx_u"])
    assert context == {"positive_prompts", "adapter", "context_head"}
    trainer = csa_trainer(clip_model, CONTEXT_INPUT="global")
    assert learned(trainer.model, trainer.compute_loss(batch_x, batch_u)["loss_ctx_x"]) == {"adapter", "context_head"}
    # the step schedule's pseudo-labels are targets, not a path for the gradient
    trainer = csa_trainer(clip_model, PL_SCHEDULE="step", CONTEXT=False)
    out = trainer.model(batch_u["img"], trainer.model.encode_classes())
    assert not trainer.unlabeled.targets(out, batch_u).requires_grad


def test_csa_predict_is_the_sigmoid_or_its_context_narrowed_score(clip_model):
    x = images(3, 4)
    for narrowing in (False, True):
        trainer = csa_trainer(clip_model, CONTEXT_NARROWING=narrowing)
        with torch.no_grad():
            classes = trainer.model.encode_classes()
            out = trainer.model(x, classes)
            scores, positives = trainer.predict(x, classes)
        expected = out["logits"].sigmoid()
        if narrowing:
            posterior = out["context_logits"].sigmoid()
            expected = expected * torch.stack([posterior[:, 0], posterior[:, 1], posterior[:, 0],
                                               torch.ones(3)], dim=1)
        assert torch.allclose(scores, expected, atol=1e-6)
        assert torch.equal(positives, scores >= 0.5)


# ================================================================ CFSG-CLIP
def cfsg_trainer(clip_model, **overrides):
    cfg = get_cfg_default()
    cfg.TRAINER.SSL.MODE = "fixmatch"
    cfg.TRAINER.SSL.CONF_THRESH = 0.0  # random CLIP: let the ID score decide the mask
    cfg.TRAINER.SSL.OOD_QUANTILE = 0.5
    cfsg = cfg.TRAINER.CFSG
    cfsg.N_CTX, cfsg.TOP_K, cfsg.DEPTH = 4, 3, 2
    for key, value in overrides.items():
        section, name = key.split(".")
        cfg.TRAINER[section][name] = value
    trainer = object.__new__(CFSG)
    trainer.cfg, trainer.device = cfg, torch.device("cpu")
    trainer.logit_scale = clip_model.logit_scale.exp().item()
    torch.manual_seed(0)
    trainer.model = CFSGModel(clip_model, CLASSES, cfsg, trainer.logit_scale)
    trainer.num_classes = len(CLASSES)
    trainer.unlabeled = ssl.FixMatch(trainer)
    return trainer


def cfsg_batches():
    batch_x = {"img": images(4, 5), "label": torch.tensor([0, 2, 1, 3])}
    # OOD hidden label 4 (diagnostics only)
    batch_u = {"img_weak": images(6, 6), "img_strong": images(6, 7), "label": torch.tensor([0, 1, 4, 2, 4, 3])}
    return batch_x, batch_u


def cfsg_hand_losses(trainer, batch_x, batch_u):
    model, cfg = trainer.model, trainer.cfg.TRAINER
    text, labels = model.encode_classes(), batch_x["label"]
    scale = trainer.logit_scale
    out_x = model(batch_x["img"], text, {"coarse": labels, "fine": labels})
    with torch.no_grad():
        weak = model(batch_u["img_weak"], text)
    strong = model(batch_u["img_strong"], text, {b: weak[b]["classes"] for b in ("coarse", "fine")})
    weights = {"coarse": cfg.CFSG.LAMBDA_C, "fine": cfg.CFSG.LAMBDA_F}
    hand = {}
    for b in ("coarse", "fine"):
        hand[f"loss_x_{b}"] = (F.cross_entropy(out_x[b]["logits"], labels)
                               + F.cross_entropy(out_x[b]["sfm_logits"], labels))
        threshold = torch.quantile(ssl.mcm(out_x[b]["logits"].detach() / scale), cfg.SSL.OOD_QUANTILE)
        passes = ssl.mcm(weak[b]["logits"] / scale) >= threshold
        loss = 0.0
        for key in ("logits", "sfm_logits"):
            confidence, pseudo = weak[b][key].softmax(-1).max(-1)
            mask = (confidence >= cfg.SSL.CONF_THRESH) & passes
            loss = loss + (F.cross_entropy(strong[b][key], pseudo, reduction="none") * mask).mean()
        hand[f"loss_u_{b}"] = cfg.SSL.LAMBDA * weights[b] * loss
    return hand


def test_cfsg_step_is_ce_on_both_heads_and_fixmatch_per_branch(clip_model):
    trainer = cfsg_trainer(clip_model)
    batch_x, batch_u = cfsg_batches()
    losses = trainer.compute_loss(batch_x, batch_u)
    hand = cfsg_hand_losses(trainer, batch_x, batch_u)
    assert_same_terms(losses, hand)
    assert all(hand[f"loss_u_{b}"] > 0 for b in ("coarse", "fine"))  # the filter let something through


@pytest.mark.parametrize(
    "key, value, scaled",
    [
        ("CFSG.LAMBDA_C", 3.0, {"loss_u_coarse": 3.0}),
        ("CFSG.LAMBDA_F", 0.5, {"loss_u_fine": 0.5}),
        ("SSL.LAMBDA", 2.0, {"loss_u_coarse": 2.0, "loss_u_fine": 2.0}),
    ],
)
def test_cfsg_each_loss_weight_scales_its_own_terms(clip_model, key, value, scaled):
    assert_weight_scales_its_terms(functools.partial(cfsg_trainer, clip_model), cfsg_batches(), key, value, scaled)


def test_cfsg_labeled_images_pool_the_patches_of_their_label(clip_model):
    trainer = cfsg_trainer(clip_model)
    batch_x, _ = cfsg_batches()
    text = trainer.model.encode_classes()
    out = trainer.forward_labeled(batch_x["img"], batch_x["label"], text)
    for b in ("coarse", "fine"):
        assert torch.equal(out[b]["classes"], batch_x["label"])


def test_cfsg_gradients_reach_what_each_loss_says(clip_model):
    batch_x, batch_u = cfsg_batches()
    trainer = cfsg_trainer(clip_model)
    model = trainer.model
    # z_c pools adapted patches and feeds the fine branch's injected token
    assert learned(model, trainer.compute_loss(batch_x, batch_u)["loss_x_coarse"]) == {"coarse_prompts", "adapter"}
    fine = learned(model, trainer.compute_loss(batch_x, batch_u)["loss_x_fine"])
    assert fine == {"fine_prompts", "inject", "adapter"}
    assert learned(model, trainer.compute_loss(batch_x, batch_u)["loss_u_fine"]) == {"fine_prompts", "inject",
                                                                                    "adapter"}


def test_cfsg_weak_view_carries_no_gradient(clip_model):
    trainer = cfsg_trainer(clip_model)
    batch_x, batch_u = cfsg_batches()
    seen = []
    forward = trainer.forward_unlabeled

    def recording(images, text, groups_weak):
        out = forward(images, text, groups_weak)
        seen.append((groups_weak is None, out["coarse"]["logits"].requires_grad, images))
        return out

    trainer.forward_unlabeled = recording
    trainer.compute_loss(batch_x, batch_u)
    (weak_first, weak_grad, weak_images), (_, strong_grad, strong_images) = seen
    assert weak_first and not weak_grad and strong_grad
    assert torch.equal(weak_images, batch_u["img_weak"]) and torch.equal(strong_images, batch_u["img_strong"])


@pytest.mark.parametrize("rule, score", [("filter", "mcm"), ("filter", "glmcm"), ("ensemble_msp", "mcm")])
def test_cfsg_predict_follows_its_id_score_rule(clip_model, rule, score):
    trainer = cfsg_trainer(clip_model, **{"CFSG.ID_SCORE": rule, "SSL.SCORE": score})
    x = images(3, 8)
    with torch.no_grad():
        text = trainer.model.encode_classes()
        out = trainer.model(x, text)
        probs, id_scores = trainer.predict(x, text)
    heads = [out[b][k].softmax(-1) for b in ("coarse", "fine") for k in ("logits", "sfm_logits")]
    mean = torch.stack(heads).mean(0)
    assert torch.allclose(probs, mean, atol=1e-6)
    if rule == "ensemble_msp":
        expected = mean.max(-1).values
    else:
        per_branch = []
        for b in ("coarse", "fine"):
            sims = out[b]["logits"] / trainer.logit_scale
            value = sims.softmax(-1).max(-1).values
            if score == "glmcm":
                value = value + (out[b]["local_logits"] / trainer.logit_scale).softmax(-1).max(-1).values.max(-1).values
            per_branch.append(value)
        expected = (per_branch[0] + per_branch[1]) / 2
    assert torch.allclose(id_scores, expected, atol=1e-6)
    assert math.isfinite(id_scores.sum().item())
