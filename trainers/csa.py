"""CSA: context-based semantic-aware alignment for semi-supervised multi-label learning.

Fan et al., "Context-Based Semantic-Aware Alignment for Semi-Supervised Multi-Label
Learning". No official code exists: what the paper states is below; every other detail
is ours and a TRAINER.CSA key (see the README's table of our choices).
- Prompts (ours, DualCoOp style): a learnable context shared across classes for the
  positive prompts and another for the negative ones; logit_k = scale * (cos(f_k, t_k^+)
  - cos(f_k, t_k^-)) (`leclip.multilabel.dual_prompts`).
- Label-specific image features (paper): f_k = attention pooling of the frozen CLIP's
  patch features with weights softmax_i(cos(patch_i, t_k^+) / TAU), aligned one-to-one
  with t_k (`leclip.multilabel.label_features`); LABEL_SPECIFIC False scores one global
  feature instead (DualCoOp).
- Losses: the asymmetric loss (ASL) on labeled images; on unlabeled images the same loss
  on pseudo-labels from class-wise thresholds (paper), chosen at the start of each epoch
  from a pass over the unlabeled set so that each class's pseudo-positive rate there
  equals its positive rate in the labeled set (the CAP rule; `leclip.multilabel.thresholds`).
  The strategy `PseudoLabels` (the trainer's unlabeled-data component) does this; on the
  `step` schedule (ours) it labels each batch from the current scores with those thresholds.
- Context identification (paper): the labeled label co-occurrence clustered into
  N_CONTEXTS contexts (spectral clustering); a head predicts an image's contexts (the
  multi-hot of the contexts of its (pseudo-)positive labels) with BCE, weight 0.5, on
  labeled and pseudo-labeled images. It reads the label-specific features that make the
  class scores (CONTEXT_INPUT label_features), so its loss reaches the adapter and the
  prompts that pool them; CONTEXT_NARROWING multiplies each class score by the posterior
  of its context (the paper's Figure 1).
The baselines `dualcoop` (global feature, labeled part only) and `dualcoop_pl` (+ the
class-wise-threshold pseudo-labels) are this trainer with its switches off.
Distributed (torchrun): the scoring pass over the unlabeled set is sharded and gathered,
so the thresholds come from every unlabeled image; the co-occurrence clustering reads the
labeled labels, which every rank holds whole.
"""
import math
import os.path as osp

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from leclip import distributed, metrics, ssl, viz
from leclip.adapters import ResidualAdapter
from leclip.backbone import ImageEncoder, PromptLearner, TextEncoder, concat_prompts
from leclip.config import add_defaults
from leclip.dassl import TRAINER_REGISTRY
from leclip.multilabel import asl, contexts, dual_prompts, thresholds
from leclip.trainer_base import CLIPTrainer

add_defaults(
    {
        "TRAINER.CSA.N_CTX": 16,  # (ours) context tokens of each prompt set, as DualCoOp
        # (ours) init words of the positive prompts; the negative context is random N(0, 0.02)
        "TRAINER.CSA.CTX_INIT": "",
        "TRAINER.CSA.LABEL_SPECIFIC": True,  # label-specific features (paper); False: one global feature
        "TRAINER.CSA.TAU": 0.01,  # (ours) attention temperature: CLIP ViT-B/16's own 1/100
        "TRAINER.CSA.POOL_NEGATIVES": False,  # (ours) True: the negative prompts pool their own features
        "TRAINER.CSA.ADAPTER": True,  # (ours) residual adapter on the image features (shared with the context head)
        "TRAINER.CSA.ADAPTER_RATIO": 0.2,  # (ours) CLIP-Adapter's blend ratio
        "TRAINER.CSA.ADAPTER_REDUCTION": 4,  # (ours) CLIP-Adapter's bottleneck reduction
        "TRAINER.CSA.PSEUDO_LABELS": True,  # ASL on unlabeled images with thresholded pseudo-labels
        "TRAINER.CSA.THRESHOLDS": "classwise",  # classwise (paper) | global (one threshold, the ablation)
        "TRAINER.CSA.PL_START_EPOCH": 1,  # (ours) epochs on the labeled part before pseudo-labels
        "TRAINER.CSA.LAMBDA_U": 1.0,  # (ours) weight of the unlabeled loss
        "TRAINER.CSA.CONTEXT": True,  # the context identification task (paper)
        "TRAINER.CSA.N_CONTEXTS": 8,  # (ours) contexts of the spectral clustering
        "TRAINER.CSA.CONTEXT_WEIGHT": 0.5,  # (ours) weight of the context loss
        # what the context head reads: "label_features" (paper: the label-specific features
        # that make the class scores, so its loss shapes them) | "global" (the adapted global feature)
        "TRAINER.CSA.CONTEXT_INPUT": "label_features",
        # (paper, Figure 1) class scores times the posterior of their context, at test and for pseudo-labels
        "TRAINER.CSA.CONTEXT_NARROWING": False,
        # (ours) when pseudo-labels are made: "epoch" (from a pass over the unlabeled set at the
        # epoch's start) | "step" (from the current model's scores on each batch, with the
        # thresholds of that pass)
        "TRAINER.CSA.PL_SCHEDULE": "epoch",
        "TRAINER.CSA.ASL_GAMMA_POS": 0.0,  # ASL's defaults (Ridnik et al.)
        "TRAINER.CSA.ASL_GAMMA_NEG": 4.0,
        "TRAINER.CSA.ASL_CLIP": 0.05,
    }
)

THRESHOLD_RULES = {"classwise": thresholds.classwise_thresholds, "global": thresholds.global_threshold}
CONTEXT_INPUTS = ("label_features", "global")
PL_SCHEDULES = ("epoch", "step")


class CSAModel(nn.Module):
    """Frozen CLIP with positive/negative prompts, label-specific features and the
    context head; `self.learnable` holds what trains."""

    def __init__(self, clip_model, classnames, cfg, logit_scale, n_contexts=0):
        super().__init__()
        self.text_encoder = TextEncoder(clip_model)
        self.image_encoder = ImageEncoder(clip_model)
        self.label_specific = cfg.LABEL_SPECIFIC
        if self.label_specific:
            self.image_encoder.require_vit("CSA's label-specific features")
        self.logit_scale = logit_scale
        self.tau, self.pool_negatives = cfg.TAU, cfg.POOL_NEGATIVES
        positive = PromptLearner(clip_model, classnames, n_ctx=cfg.N_CTX, ctx_init=cfg.CTX_INIT)
        learnable = {
            "positive_prompts": positive,
            "negative_prompts": PromptLearner(clip_model, classnames, n_ctx=positive.n_ctx),
        }
        dim = self.image_encoder.output_dim
        if cfg.ADAPTER:
            learnable["adapter"] = ResidualAdapter(dim, cfg.ADAPTER_REDUCTION, cfg.ADAPTER_RATIO)
        self.context_input = cfg.CONTEXT_INPUT
        if n_contexts and self.context_input == "label_features":
            learnable["context_head"] = contexts.LabelContextHead(len(classnames), dim, n_contexts)
        elif n_contexts:
            learnable["context_head"] = contexts.ContextHead(dim, n_contexts)
        self.learnable = nn.ModuleDict(learnable)

    def encode_classes(self):
        """(positive [C, D], negative [C, D]) normalised prompt features, in one text pass."""
        # concat_prompts keeps each set's shared prefix, so the text pass runs it once
        text = self.text_encoder(*concat_prompts(self.learnable["positive_prompts"](), self.learnable["negative_prompts"]()))
        return dual_prompts.split_dual(F.normalize(text, dim=-1))

    def forward(self, images, classes):
        """dict(logits [B, C]; context_logits [B, K] with the context head (on the
        label-specific features or the global feature, CONTEXT_INPUT); attention [B, C, N]
        with label-specific features)."""
        positive, negative = classes
        with torch.no_grad():  # the image tower is frozen
            global_feature, patches = self.image_encoder(images, patches=self.label_specific)
        if "adapter" in self.learnable:
            global_feature = self.learnable["adapter"](global_feature)
            patches = None if patches is None else self.learnable["adapter"](patches)
        if self.label_specific:
            logits, features, attention = dual_prompts.label_specific_dual_logits(
                patches, positive, negative, self.logit_scale, self.tau, self.pool_negatives
            )
            out = {"logits": logits, "attention": attention}
        else:
            out = {"logits": dual_prompts.dual_logits(global_feature, positive, negative, self.logit_scale)}
        if "context_head" in self.learnable:
            head_input = features if self.context_input == "label_features" else global_feature
            out["context_logits"] = self.learnable["context_head"](head_input)
        return out


@TRAINER_REGISTRY.register()
class CSA(CLIPTrainer):
    # the harness's method keys of this trainer and their names in the tables, its own last; the others
    # are variants: configs/trainers/CSA/variants/<key>.yaml over the recipe
    methods = {
        "dualcoop": "DualCoOp",
        "dualcoop_pl": "DualCoOp + pseudo-labels",
        "csa": "CSA",
    }
    table_row = 9  # its place in each task's table: baselines first, the papers' methods last
    tasks = ("C",)

    @property
    def use_unlabeled(self):
        return self.cfg.TRAINER.CSA.PSEUDO_LABELS

    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        csa = cfg.TRAINER.CSA
        if cfg.TRAINER.SSL.MODE != "none":
            raise ValueError(
                "CSA pseudo-labels unlabeled images with class-wise thresholds (TRAINER.CSA.PSEUDO_LABELS): "
                "set TRAINER.SSL.MODE none"
            )
        if csa.THRESHOLDS not in THRESHOLD_RULES:
            raise ValueError(f"TRAINER.CSA.THRESHOLDS={csa.THRESHOLDS!r}: use one of {tuple(THRESHOLD_RULES)}")
        for key, allowed in (("CONTEXT_INPUT", CONTEXT_INPUTS), ("PL_SCHEDULE", PL_SCHEDULES)):
            if csa[key] not in allowed:
                raise ValueError(f"TRAINER.CSA.{key}={csa[key]!r}: use one of {allowed}")
        if csa.CONTEXT and csa.CONTEXT_INPUT == "label_features" and not csa.LABEL_SPECIFIC:
            raise ValueError(
                "TRAINER.CSA.CONTEXT_INPUT label_features reads the label-specific features: "
                "set TRAINER.CSA.LABEL_SPECIFIC True or CONTEXT_INPUT global"
            )
        if csa.CONTEXT_NARROWING and not csa.CONTEXT:
            raise ValueError(
                "TRAINER.CSA.CONTEXT_NARROWING reweights class scores by the context head: set TRAINER.CSA.CONTEXT True"
            )
        if csa.TAU <= 0 or csa.N_CONTEXTS < 1 or csa.PL_START_EPOCH < 0:
            raise ValueError(
                f"TRAINER.CSA: TAU={csa.TAU}, N_CONTEXTS={csa.N_CONTEXTS}, PL_START_EPOCH={csa.PL_START_EPOCH}: "
                "TAU must be positive, N_CONTEXTS at least 1, PL_START_EPOCH at least 0"
            )

    def build_data_loader(self):
        super().build_data_loader()
        if not self.dm.dataset.train_x:
            raise ValueError(
                f"CSA is semi-supervised (task C) and {self.cfg.DATASET.NAME} has no labeled image in this setting: "
                "set DATASET.LABELED_RATIO (e.g. 0.1); for the unsupervised setting use ccd"
            )

    def build_model(self):
        cfg = self.cfg.TRAINER.CSA
        self.labeled_labels = torch.tensor([d.label for d in self.dm.dataset.train_x], dtype=torch.float32)
        absent = contexts.classes_without_positives(self.labeled_labels.numpy())
        if len(absent):
            names = ", ".join(self.classnames[k] for k in absent)
            print(
                f"CSA: {len(absent)} classes have no positive among the {len(self.labeled_labels)} labeled images "
                f"({names}): they get no pseudo-positive and no context"
            )
        n_contexts = 0
        if cfg.CONTEXT:
            self.class_context = contexts.cluster_classes(self.labeled_labels.numpy(), cfg.N_CONTEXTS, seed=self.seed)
            n_contexts = cfg.N_CONTEXTS
            for heading, members in self.context_groups():
                print(f"CSA {heading}: {', '.join(members)}")
        self.clip_model = self.load_clip()
        self.model = CSAModel(self.clip_model, self.classnames, cfg, self.logit_scale, n_contexts).to(self.device)
        self.setup_optimization("csa", self.model.learnable)

    def build_unlabeled(self):
        return PseudoLabels(self) if self.use_unlabeled else ssl.Unlabeled(self)

    def trainer_state(self):
        """The contexts travel with the checkpoint (the pseudo-labels with the strategy's state)."""
        contexts_now = torch.as_tensor(self.class_context) if self.cfg.TRAINER.CSA.CONTEXT else None
        return {**super().trainer_state(), "class_context": contexts_now}

    def load_trainer_state(self, state):
        super().load_trainer_state(state)
        if state["class_context"] is not None:
            self.class_context = state["class_context"].numpy()

    # ---------------------------------------------------------------- pseudo-labels
    def class_scores(self, out):
        """Probabilities [B, C] of the classes: sigmoid of the logits, times the posterior of
        each class's context under CONTEXT_NARROWING."""
        scores = out["logits"].float().sigmoid()
        if self.cfg.TRAINER.CSA.CONTEXT_NARROWING:
            scores = contexts.narrow_scores(scores, out["context_logits"], self.class_context)
        return scores

    @torch.no_grad()
    def score_unlabeled(self):
        """Class scores [N_u, C] of the current model on the whole unlabeled set (test view)."""
        loader = self.dm.make_loader(self.dm.dataset.train_u, views="test")
        with self.autocast():
            classes = self.encode_classes()
        return self.score_pass(
            loader, lambda batch: self.class_scores(self.forward_eval(batch["img"], classes)), "Pseudo-labels"
        )

    # ---------------------------------------------------------------- losses
    def asl(self, logits, targets):
        cfg = self.cfg.TRAINER.CSA
        return asl.asymmetric_loss(
            logits, targets, gamma_pos=cfg.ASL_GAMMA_POS, gamma_neg=cfg.ASL_GAMMA_NEG, clip=cfg.ASL_CLIP
        )

    def context_targets(self, labels):
        return contexts.context_targets(labels, self.class_context, self.cfg.TRAINER.CSA.N_CONTEXTS)

    def context_loss(self, out, targets):
        loss = contexts.context_loss(out["context_logits"], self.context_targets(targets))
        return self.cfg.TRAINER.CSA.CONTEXT_WEIGHT * loss

    def supervised_losses(self, out, labels):
        losses = {"loss_x": self.asl(out["logits"], labels)}
        if self.cfg.TRAINER.CSA.CONTEXT:
            losses["loss_ctx_x"] = self.context_loss(out, labels)
        return losses

    # ---------------------------------------------------------------- testing
    def predict(self, images, classes):
        """(class scores [B, C], positives = scores >= 0.5): per-class decisions."""
        return self.eval_outputs(images, classes)[:2]

    def eval_outputs(self, images, classes):
        """predict's outputs, and with the context task the context head's logits [B, K] of
        the same forward (for `evaluated`)."""
        out = self.forward_eval(images, classes)
        scores = self.class_scores(out)
        context = (out["context_logits"],) if "context_logits" in out else ()  # the model has a context head
        return (scores, scores >= 0.5, *context)

    def evaluated(self, split, labels, logits=None):
        """With the context task, the context head's accuracy against the contexts of the
        true labels: per (image, context), exact, and its mAP over the contexts, beside the
        constant predictor at the labeled rates."""
        if logits is None:
            return
        targets = self.context_targets(labels.float())
        element, exact = contexts.context_accuracy(logits, targets)
        # threshold-free: does the head rank the images of each context first? (AP over images)
        ranked, bce = metrics.mean_average_precision(logits, targets), contexts.context_loss(logits, targets).item()
        # the constant predictor at the labeled images' context rates: what a head that learns nothing
        # reaches (its mAP, every image tied, is the mean context rate)
        rate = self.context_targets(self.labeled_labels).mean(dim=0).clamp(1e-4, 1 - 1e-4)
        prior = torch.logit(rate).expand_as(logits)
        prior_element, _ = contexts.context_accuracy(prior, targets)
        print(
            f"* context_accuracy: {element:.2f}%  (exact {exact:.2f}%, mAP {ranked:.2f}, BCE {bce:.3f}; labeled-rate "
            f"prior: {prior_element:.2f}%, mAP {metrics.mean_average_precision(prior, targets):.2f}, BCE "
            f"{contexts.context_loss(prior, targets).item():.3f}; logit 0: BCE "
            f"{self.cfg.TRAINER.CSA.N_CONTEXTS * math.log(2):.3f})"
        )
        self.evaluator.last_results.update(context_accuracy=element, context_exact=exact, context_map=ranked)
        for name, value in (("context_accuracy", element), ("context_exact", exact), ("context_map", ranked)):
            self.write_scalar(f"{split}/{name}", value, getattr(self, "epoch", 0))

    # ---------------------------------------------------------------- figures
    def context_groups(self):
        """[(f"context {k}", its class names)] of the spectral clustering's contexts."""
        return [(f"context {k}", [self.classnames[c] for c in np.flatnonzero(self.class_context == k)])
                for k in range(self.cfg.TRAINER.CSA.N_CONTEXTS)]

    @torch.no_grad()
    def visualize(self, folder):
        """--viz: the contexts (csa_contexts.txt, and the label correlation they cluster as a
        heat map ordered by context) and each class's attention weights over the patches of
        the first TRAINER.VIZ_IMAGES test images (one grid per image)."""
        cfg = self.cfg.TRAINER.CSA
        if not (cfg.CONTEXT or cfg.LABEL_SPECIFIC):
            print("--viz: CSA with TRAINER.CSA.CONTEXT and LABEL_SPECIFIC False has nothing to draw")
            return
        if not distributed.is_main():
            return
        written = []
        if cfg.CONTEXT:
            unseen = np.flatnonzero(self.class_context == contexts.NO_CONTEXT)
            groups = self.context_groups()
            if len(unseen):
                groups.append(("no context (no labeled positive)", [self.classnames[c] for c in unseen]))
            written.append(viz.write_groups(osp.join(folder, "csa_contexts.txt"), groups))
            # the classes without a context last
            order = np.where(self.class_context == contexts.NO_CONTEXT, cfg.N_CONTEXTS, self.class_context)
            written.append(viz.matrix_heatmap(
                osp.join(folder, "csa_label_correlation.png"), contexts.cooccurrence(self.labeled_labels.numpy()),
                self.classnames, "label correlation of the labeled images, classes by context", groups=order,
            ))
        if cfg.LABEL_SPECIFIC:
            self.set_model_mode("eval")
            few = self.dm.dataset.test[: self.cfg.TRAINER.VIZ_IMAGES]
            batch = self.dm.batch(few)
            with self.autocast():
                out = self.forward_eval(self.to_device(batch), self.encode_classes())
            attention, scores = out["attention"].float().cpu(), out["logits"].float().sigmoid().cpu()  # [B, C, N]
            grid = math.isqrt(attention.shape[-1])
            if grid * grid != attention.shape[-1]:
                raise ValueError(f"{attention.shape[-1]} patches do not make a square grid to draw")
            mean, std = self.cfg.INPUT.PIXEL_MEAN, self.cfg.INPUT.PIXEL_STD
            for i in range(len(few)):
                titles = [f"{name}\np {scores[i, k]:.2f}, max w {attention[i, k].max():.2f}"
                          for k, name in enumerate(self.classnames)]
                written.append(viz.attention_grid(
                    osp.join(folder, f"csa_attention_image{i}.png"), viz.to_rgb(batch["img"][i], mean, std),
                    attention[i].view(-1, grid, grid).numpy(), titles,
                    highlighted=set(batch["label"][i].nonzero().flatten().tolist()),
                    title=f"test image {i}: each class's attention over the {grid}x{grid} patches (green: true labels)",
                ))
        print(f"--viz: CSA's {', '.join(osp.basename(path) for path in written)} in {folder}")


class PseudoLabels(ssl.Unlabeled):
    """CSA's unlabeled data: ASL (and the context loss) on pseudo-labels from class-wise
    thresholds. From epoch PL_START_EPOCH on, each epoch starts with a pass over the
    unlabeled set that sets the thresholds (THRESHOLDS) and, on the `epoch` schedule, the
    epoch's labels; on the `step` schedule each batch is labeled from the current model's
    scores with those thresholds. Its state: the epoch's thresholds and labels."""

    def __init__(self, trainer):
        super().__init__(trainer)
        self.cfg = trainer.cfg.TRAINER.CSA
        self.thresholds = self.pseudo = None
        self.quality = thresholds.QualityCounter()

    def reads_unlabeled(self, epoch):
        return epoch >= self.cfg.PL_START_EPOCH

    def before_epoch(self):
        trainer = self.trainer
        self.quality = thresholds.QualityCounter()
        if not self.reads_unlabeled(trainer.epoch):
            return
        scores = trainer.score_unlabeled()
        threshold = THRESHOLD_RULES[self.cfg.THRESHOLDS](scores, trainer.labeled_labels)
        pseudo = thresholds.threshold_pseudo_labels(scores, threshold).float()
        hidden = torch.tensor([d.label for d in trainer.dm.dataset.train_u], dtype=torch.float32)
        quality = thresholds.pseudo_label_quality(pseudo, hidden)
        shown = " ".join(f"{t:.3f}" for t in threshold.reshape(-1).tolist())
        print(
            f"epoch [{trainer.epoch + 1}/{trainer.max_epoch}] pseudo-labels ({self.cfg.THRESHOLDS} thresholds): "
            f"{int(pseudo.sum())} positives in {len(pseudo)} images, precision {100 * quality['precision']:.1f}% "
            f"recall {100 * quality['recall']:.1f}% | thresholds {shown}"
        )
        self.thresholds, self.pseudo = threshold.to(trainer.device), pseudo.to(trainer.device)

    def after_epoch(self):
        """The epoch's diagnostics: precision and recall of the pseudo-labels the loss used."""
        trainer, counter = self.trainer, self.quality
        if not self.reads_unlabeled(trainer.epoch):
            return
        counter.true_pos, counter.predicted, counter.actual = distributed.sum_over_ranks(
            [counter.true_pos, counter.predicted, counter.actual]
        )
        quality = counter.summary()
        print(
            f"epoch [{trainer.epoch + 1}/{trainer.max_epoch}] pseudo-labels used ({self.cfg.PL_SCHEDULE} schedule): "
            f"precision {quality['precision']:.1f}% recall {quality['recall']:.1f}%"
        )
        for name, value in quality.items():
            trainer.write_scalar(f"train/pseudo_label_{name}", value, trainer.epoch)

    def targets(self, out_u, batch_u):
        """Pseudo-labels of an unlabeled batch: this epoch's (epoch schedule) or the class
        thresholds applied to the current scores (step schedule, without gradient)."""
        if self.cfg.PL_SCHEDULE == "step":
            targets = thresholds.threshold_pseudo_labels(self.trainer.class_scores(out_u).detach(), self.thresholds)
        else:
            targets = self.pseudo[batch_u["index"].to(self.pseudo.device)]
        self.quality.update(targets.cpu(), batch_u["label"])
        return targets

    def losses(self, out_x, batch_u, classes):
        trainer = self.trainer
        out_u = trainer.forward_unlabeled(trainer.to_device(batch_u), classes, None)
        targets = self.targets(out_u, batch_u)
        losses = {"loss_u": self.cfg.LAMBDA_U * trainer.asl(out_u["logits"], targets)}
        if self.cfg.CONTEXT:
            losses["loss_ctx_u"] = trainer.context_loss(out_u, targets)
        return losses

    def state(self):
        return {name: None if value is None else value.cpu()
                for name, value in (("thresholds", self.thresholds), ("pseudo", self.pseudo))}

    def load_state(self, state):
        device = self.trainer.device
        self.thresholds, self.pseudo = (None if state[k] is None else state[k].to(device) for k in ("thresholds", "pseudo"))
