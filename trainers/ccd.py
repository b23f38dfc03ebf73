"""CCD: classifier-guided CLIP distillation for unsupervised multi-label classification.

Kim & Shim, "Classifier-guided CLIP Distillation for Unsupervised Multi-label
Classification", as released (github.com/k0u-id/CCD), generalised to any dataset and
class list. A torchvision classifier with class activation maps learns from CLIP:
1. CLIP's labels of every training image (softmax(CLIP_SCALE cos) over the classes),
   cached on disk (`leclip.multilabel.label_cache`); an image whose entropy exceeds
   MAX_ENTROPY is unreliable (loss weight UNRELIABLE_WEIGHT); divided by CLIP's class
   bias (DEBIAS) with the floor 1/LS_COEFF. Other label sources (`LABEL_SOURCES`) and
   losses (`LOSSES`) give the task-B baselines;
2. the classifier (`cam.CAMClassifier`, its weights by torchvision name) trains on them
   with soft-target BCE, the head at HEAD_LR_MULT x the LR;
3. after WARMUP_EPOCHS, one CAM-guided label update (UPDATE, in `before_epoch`): classes
   whose sigmoid passes a calibrated threshold, each CAM's box cut and scored by CLIP,
   blended with RATIO of the old label; from then on a second view's consistency loss;
4. after each epoch the label-free rule (`selection`) may select it; the final and the
   selected model are both evaluated, the selected one is the headline.
The label table (`label_table.LabelTable`: labels, history, selection) is this trainer's
state inside every epoch checkpoint. Every pass over the data is `score_pass` (sharded and
gathered under torchrun). Each difference from the release is a key (docs/METHODS.md).
"""
import os.path as osp
from functools import partial

import torch
import torchvision.transforms as T

from leclip import distributed, viz
from leclip.backbone import class_text_features
from leclip.backbone.loader import resolve_checkpoint
from leclip.config import add_defaults
from leclip.dassl import TRAINER_REGISTRY, build_lr_scheduler, build_optimizer, load_checkpoint
from leclip.data import register_view
from leclip.data.transforms import IMAGENET_MEAN, IMAGENET_STD, interpolation
from leclip.metrics import mean_average_precision
from leclip.multilabel import cam, clip_labels, label_cache, label_update, losses
from leclip.multilabel.any_size import encode_any_size
from leclip.multilabel.label_table import LabelTable
from leclip.trainer_base import CLIPTrainer

add_defaults(
    {
        "TRAINER.CCD.BACKBONE": "resnet50",  # any torchvision CNN (as released: resnet50)
        # as released: torchvision's weights by name, through its cache; or a state dict's path,
        # "embedded" (the embedded world's stand-in, registered by it), "random" (asked for only)
        "TRAINER.CCD.WEIGHTS": "IMAGENET1K_V1",
        "TRAINER.CCD.INPUT_SIZE": 448,  # the classifier's square training input (as released)
        "TRAINER.CCD.CAM_COEFF": 3.0,  # positive CAM values x this, from the first step (as released)
        "TRAINER.CCD.HEAD_LR_MULT": 10.0,  # the 1x1 conv's LR multiplier (as released)
        # what the classifier learns from: clip (CCD) | cdul | top1 (single positive) | true (labels)
        "TRAINER.CCD.LABELS": "clip",
        "TRAINER.CCD.LOSS": "bce",  # bce (soft targets) | an | an_ls | role (single-positive losses)
        "TRAINER.CCD.CLIP_SCALE": 100.0,  # softmax(100 cos), as released (not the model's logit scale)
        # (ours) True: DATASET.PROMPT_TEMPLATE as it is ("a photo of the {}."); False, as
        # released: without its trailing period ("a photo of the {}")
        "TRAINER.CCD.TEMPLATE_PERIOD": True,
        # (ours) CLIP's input: "test" = its own preprocessing; "squash" = the whole image squashed
        # to CLIP_SIZE (the released geometry)
        "TRAINER.CCD.CLIP_VIEW": "test",
        "TRAINER.CCD.CLIP_SIZE": 0,  # (ours) 0: CLIP's own input size; as released 640 (positions resampled)
        "TRAINER.CCD.CLIP_NORM": "clip",  # (ours) CLIP's normalisation | "imagenet" (as released)
        # (ours) 0: INPUT_SIZE; as released 640: the classifier's input in the class-selection and
        # CAM pass of the update, and the image the crops are cut from
        "TRAINER.CCD.LABEL_PASS_SIZE": 0,
        "TRAINER.CCD.CACHE_DIR": "",  # where CLIP's labels are cached; empty: <DATASET.ROOT>/leclip_cache/ccd
        "TRAINER.CCD.MAX_ENTROPY": 2.0,  # images above it are unreliable (as released)
        "TRAINER.CCD.UNRELIABLE_WEIGHT": 1.0,  # their loss weight (as released: loss_coeff 1)
        "TRAINER.CCD.LS_COEFF": 20.0,  # label-smoothing floor 1/LS_COEFF (as released)
        "TRAINER.CCD.DEBIAS": True,  # divide by CLIP's class bias (as released)
        "TRAINER.CCD.UPDATE": True,  # the CAM-guided label update after the warm-up (as released)
        "TRAINER.CCD.WARMUP_EPOCHS": 2,  # as released
        "TRAINER.CCD.BOUND": 4,  # the update selects BOUND..BOUND+2 classes per image on average (as released)
        # (ours) "all": the threshold judged on every image at once; "walk" as released: +0.001 per
        # window of 100 random images until one lands
        "TRAINER.CCD.CALIBRATION": "all",
        "TRAINER.CCD.CAM_THRESHOLD": 0.95,  # as released
        "TRAINER.CCD.BOX_RULE": "bbox",  # (ours) bbox of the hot pixels | released
        "TRAINER.CCD.BOX_GROW": 80.0,  # px at a 640 px label pass, scaled with its size (as released)
        "TRAINER.CCD.CROPS": "square",  # (ours) square at CLIP's input | "aspect" (as released)
        "TRAINER.CCD.CROP_LONG_SIDE": 640,  # CROPS aspect: the crops' long side in px (as released)
        "TRAINER.CCD.RATIO": 0.2,  # share of the old label in the blend (as released)
        "TRAINER.CCD.CLAMP_LOCAL": False,  # (as released) clamp the crops' debiased score before the blend
        "TRAINER.CCD.CROPS_PER_CLASS": 1,  # (as released 1) >1: randomly jittered crops around each box
        "TRAINER.CCD.CROP_JITTER": 0.1,  # (ours) edge jitter of the extra crops, x the box side
        # (ours) True: the selection rule may pick an epoch only once it compares updated labels
        "TRAINER.CCD.SELECT_AFTER_UPDATE": False,
        "TRAINER.CCD.CONSISTENCY": True,  # the second view's consistency loss from the update on (as released)
        "TRAINER.CCD.CONSISTENCY_WEIGHT": 1.0,  # as released
        # the second view's ColorJitter (brightness, contrast, saturation, hue), as released
        "TRAINER.CCD.JITTER": (0.5, 0.5, 0.5, 0.5),
        "TRAINER.CCD.CDUL_GRID": 3,  # CDUL: grid x grid tiles (from the CDUL paper)
        "TRAINER.CCD.CDUL_ZETA": 0.5,  # (ours) CDUL's tile threshold
        "TRAINER.CCD.AN_SMOOTHING": 0.1,  # AN-LS's label smoothing (from Cole et al.)
        "TRAINER.CCD.ROLE_EXPECTED_POSITIVES": 2.0,  # (ours) ROLE's expected positives per image
        "TRAINER.CCD.ROLE_LR_MULT": 100.0,  # (ours) LR of ROLE's label estimates, x OPTIM.LR
    }
)

CHOICES = {"CLIP_VIEW": ("test", "squash"), "CLIP_NORM": ("clip", "imagenet"), "BOX_RULE": cam.BOX_RULES,
           "CALIBRATION": cam.CALIBRATIONS, "CROPS": ("square", "aspect")}
SELECTED = "model-selected.pth.tar"  # the checkpoint of the label-free rule's epoch
TRAIN_VIEWS = ("ccd_train", "ccd_jitter")  # the released two views: flip, and flip + colour jitter


def _view(cfg, size=None, train=False, jitter=False, clip_norm=False):
    """The whole image squashed to a square (as released): the classifier's input (ImageNet
    normalisation), or with `clip_norm` the CLIP view the crops are cut from."""
    size = size or cfg.TRAINER.CCD.INPUT_SIZE
    ops = [T.Resize((size, size), interpolation=interpolation(cfg))]
    if jitter:
        ops.append(T.ColorJitter(*cfg.TRAINER.CCD.JITTER))
    if train:
        ops.append(T.RandomHorizontalFlip())
    mean, std = clip_normalisation(cfg) if clip_norm else (IMAGENET_MEAN, IMAGENET_STD)
    return T.Compose(ops + [T.ToTensor(), T.Normalize(mean, std)])


def clip_normalisation(cfg):
    return (IMAGENET_MEAN, IMAGENET_STD) if cfg.TRAINER.CCD.CLIP_NORM == "imagenet" else (cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD)


def label_pass_size(cfg):
    return cfg.TRAINER.CCD.LABEL_PASS_SIZE or cfg.TRAINER.CCD.INPUT_SIZE


register_view("ccd_train", lambda cfg: _view(cfg, train=True))
register_view("ccd_jitter", lambda cfg: _view(cfg, train=True, jitter=True))
register_view("ccd_eval", _view)
register_view("ccd_label", lambda cfg: _view(cfg, label_pass_size(cfg)))  # the update's classifier input
register_view("ccd_crops", lambda cfg: _view(cfg, label_pass_size(cfg), clip_norm=True))  # where boxes are cut
register_view("clip_squash", lambda cfg: _view(cfg, cfg.TRAINER.CCD.CLIP_SIZE or cfg.INPUT.SIZE[0], clip_norm=True))


# ---- what the classifier learns from: name -> trainer -> (targets [N, C], weights [N], bias [C] or None)
def clip_source(trainer):
    """CCD: CLIP's whole-image labels; unreliable images weighted; divided by the class bias."""
    ccd = trainer.cfg.TRAINER.CCD
    probs = trainer.clip_labels("global")
    flagged = clip_labels.unreliable(probs, ccd.MAX_ENTROPY)
    weights = torch.where(flagged, ccd.UNRELIABLE_WEIGHT, 1.0)
    print(f"CCD: {int(flagged.sum())} of {len(probs)} images unreliable (entropy > {ccd.MAX_ENTROPY:g})")
    fix = f"every image's entropy exceeds TRAINER.CCD.MAX_ENTROPY={ccd.MAX_ENTROPY:g}: raise it or set TRAINER.CCD.DEBIAS False"
    bias = clip_labels.class_bias(probs, ~flagged, fix) if ccd.DEBIAS else torch.ones(probs.shape[1])
    if ccd.DEBIAS:
        print("CCD: CLIP's class bias: " + ", ".join(f"{n} {b:.3f}" for n, b in zip(trainer.classnames, bias.tolist())))
    return clip_labels.debias(probs, bias, ccd.LS_COEFF), weights, bias


LABEL_SOURCES = {
    "clip": clip_source,
    "cdul": lambda t: (t.clip_labels("cdul"), torch.ones(len(t.hidden_labels)), None),
    "top1": lambda t: (clip_labels.single_positive(t.clip_labels("global")), torch.ones(len(t.hidden_labels)), None),
    "true": lambda t: (t.hidden_labels.clone(), torch.ones(len(t.hidden_labels)), None),
}

# ---- the loss on the pseudo-labels: name -> (trainer, logits, targets, weights, index) -> loss
LOSSES = {
    "bce": lambda t, logits, targets, weights, index: losses.soft_bce(logits, targets, weights),
    "an": lambda t, logits, targets, weights, index: losses.assume_negative_loss(logits, targets),
    "an_ls": lambda t, logits, targets, weights, index: losses.assume_negative_ls_loss(
        logits, targets, t.cfg.TRAINER.CCD.AN_SMOOTHING),
    "role": lambda t, logits, targets, weights, index: losses.role_loss(
        logits, t.estimator(index.to(logits.device)), targets, t.cfg.TRAINER.CCD.ROLE_EXPECTED_POSITIVES),
}
SINGLE_POSITIVE = ("an", "an_ls", "role")  # the losses of LABELS top1
CLIP_LABEL_PASSES = {  # kind -> (trainer, images) -> CLIP's labels of the batch
    "global": lambda t, images: label_update.clip_image_probs(t.encode, images, t.text_features, t.ccd.CLIP_SCALE),
    "cdul": lambda t, images: label_update.cdul_initial_labels(
        t.encode, images, t.text_features, t.ccd.CDUL_GRID, t.ccd.CDUL_ZETA, t.ccd.CLIP_SCALE),
}


@TRAINER_REGISTRY.register()
class CCD(CLIPTrainer):
    # the harness's method keys of this trainer and their names in the tables, its own last; the others
    # are variants: configs/trainers/CCD/variants/<key>.yaml over the recipe
    methods = {
        "bce_full": "BCE (true labels)",
        "an": "AN (CLIP top-1)",
        "an_ls": "AN-LS (CLIP top-1)",
        "role": "ROLE (CLIP top-1)",
        "cdul": "CDUL",
        "ccd": "CCD",
    }
    table_row = 8  # its place in each task's table: baselines first, the papers' methods last
    tasks = ("B",)
    # methods that learn from the true training labels: the upper bound of their task, first in its table and marked
    upper_bounds = ("bce_full",)
    # its metric in the tables beside the evaluator's mAP, CF1 and OF1: the last epoch's model (results.json
    # keeps all it reports: final_CF1, final_OF1, selected_epoch, labels_initial_mAP, labels_final_mAP too)
    metrics = ("final_mAP",)

    use_unlabeled = True  # the training images, whose labels the classifier never reads (the label table's)

    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        ccd = cfg.TRAINER.CCD
        for key, allowed in (("LABELS", LABEL_SOURCES), ("LOSS", LOSSES), *CHOICES.items()):
            if ccd[key] not in allowed:
                raise ValueError(f"TRAINER.CCD.{key}={ccd[key]!r}: use one of {tuple(allowed)}")
        if (ccd.LOSS in SINGLE_POSITIVE) != (ccd.LABELS == "top1"):
            raise ValueError(f"TRAINER.CCD.LOSS={ccd.LOSS!r} with LABELS={ccd.LABELS!r}: the single-positive losses "
                             "(an, an_ls, role) train on LABELS top1, and LABELS top1 needs one of them")
        if ccd.LABELS != "clip" and (ccd.UPDATE or ccd.DEBIAS or ccd.CONSISTENCY):
            raise ValueError(f"TRAINER.CCD.LABELS={ccd.LABELS!r}: the label update, debiasing and consistency are "
                             "CCD's (LABELS clip); set UPDATE, DEBIAS and CONSISTENCY False")
        if ccd.CLIP_NORM == "imagenet" and ccd.CLIP_VIEW == "test":
            raise ValueError("TRAINER.CCD.CLIP_NORM imagenet renormalises the views CCD builds: set CLIP_VIEW squash")
        if min(ccd.WARMUP_EPOCHS, ccd.CLIP_SIZE, ccd.LABEL_PASS_SIZE) < 0 or ccd.INPUT_SIZE < 32 or ccd.CROPS_PER_CLASS < 1:
            raise ValueError(
                f"TRAINER.CCD: WARMUP_EPOCHS={ccd.WARMUP_EPOCHS}, INPUT_SIZE={ccd.INPUT_SIZE}, CLIP_SIZE={ccd.CLIP_SIZE}, "
                f"LABEL_PASS_SIZE={ccd.LABEL_PASS_SIZE}, CROPS_PER_CLASS={ccd.CROPS_PER_CLASS}: use WARMUP_EPOCHS, "
                "CLIP_SIZE, LABEL_PASS_SIZE >= 0, INPUT_SIZE >= 32, CROPS_PER_CLASS >= 1")
        jitter = list(ccd.JITTER)
        if len(jitter) != 4 or min(jitter) < 0 or jitter[3] > 0.5:
            raise ValueError(f"TRAINER.CCD.JITTER={ccd.JITTER!r}: give (brightness, contrast, saturation, hue), each "
                             ">= 0 and hue <= 0.5 (as released: (0.5, 0.5, 0.5, 0.5))")
        if cfg.TRAINER.SSL.MODE != "none":
            raise ValueError("CCD learns from CLIP's pseudo-labels: set TRAINER.SSL.MODE none")
        if list(cfg.DATALOADER.TRAIN_U.VIEWS) != list(TRAIN_VIEWS):
            raise ValueError(f"DATALOADER.TRAIN_U.VIEWS={list(cfg.DATALOADER.TRAIN_U.VIEWS)}: CCD trains on its two "
                             f"views, set {list(TRAIN_VIEWS)}")

    def build_data_loader(self):
        super().build_data_loader()  # refuses a setting with labeled images: it is not task B
        self.test_loader = self.dm.make_loader(self.dm.dataset.test, views="ccd_eval", stream="test")
        self.hidden_labels = torch.tensor([d.label for d in self.dm.dataset.train_u], dtype=torch.float32)

    def build_model(self):
        self.ccd = ccd = self.cfg.TRAINER.CCD
        self.clip_model = self.load_clip().to(self.device)
        self.encode = partial(encode_any_size, self.clip_model)  # CLIP at any input size (the released crops)
        template = self.template()
        self.text_features = class_text_features(self.clip_model, self.classnames, template, self.device)
        classifier = cam.CAMClassifier(self.num_classes, ccd.BACKBONE, ccd.WEIGHTS, ccd.CAM_COEFF).to(self.device)
        self.classifier = distributed.global_batch_norm(classifier)  # N processes normalise as one batch
        optim = build_optimizer(self.classifier, self.cfg.OPTIM, param_groups=self.classifier.param_groups(
            self.cfg.OPTIM.LR, ccd.HEAD_LR_MULT))
        self.register_model("classifier", self.classifier, optim, build_lr_scheduler(optim, self.cfg.OPTIM))
        print(f"CCD: {ccd.BACKBONE} classifier ({classifier.weights_source} weights) at {ccd.INPUT_SIZE} px learning "
              f"from {ccd.LABELS} labels ({ccd.LOSS} loss); CLIP {self.cfg.MODEL.BACKBONE.NAME} with {template!r}")

    def template(self):
        template = self.cfg.DATASET.PROMPT_TEMPLATE
        return template if self.ccd.TEMPLATE_PERIOD else template.rstrip(".")

    def predict(self, images, classes):
        """(sigmoid scores [B, C], positives = scores >= 0.5): per-class decisions."""
        scores = self.classifier(images).float().sigmoid()
        return scores, scores >= 0.5

    def encode_classes(self):
        return None  # the classifier has no class side

    # ---------------------------------------------------------------- CLIP's labels
    def clip_labels(self, kind):
        """CLIP's labels [N, C] of the training images (CLIP_LABEL_PASSES), from the cache or
        computed once by a pass over them."""
        ccd, cfg = self.ccd, self.cfg
        view = "clip_squash" if ccd.CLIP_VIEW == "squash" else "test"
        size = [ccd.CLIP_SIZE] * 2 if ccd.CLIP_VIEW == "squash" and ccd.CLIP_SIZE else list(cfg.INPUT.SIZE)
        name = kind if kind == "global" else f"cdul-grid{ccd.CDUL_GRID}-zeta{ccd.CDUL_ZETA:g}"
        key = label_cache.key(
            name, resolve_checkpoint(cfg.MODEL.BACKBONE.NAME, cfg.MODEL.BACKBONE.PATH), self.classnames,
            self.template(), osp.abspath(cfg.DATASET.ROOT or "."),
            [d.impath for d in self.dm.dataset.train_u],
            [ccd.CLIP_VIEW, size, cfg.INPUT.INTERPOLATION, *map(list, clip_normalisation(cfg))], ccd.CLIP_SCALE)
        folder = ccd.CACHE_DIR or osp.join(osp.abspath(cfg.DATASET.ROOT or "."), "leclip_cache", "ccd")
        loader = self.dm.make_loader(self.dm.dataset.train_u, views=view)
        fn = CLIP_LABEL_PASSES[kind]
        return label_cache.cached(folder, key, lambda: self.score_pass(
            loader, lambda batch: fn(self, batch[f"img_{view}"]), f"CLIP {kind} labels"))

    # ---------------------------------------------------------------- the update
    def cam_candidates(self, images, return_maps=False):
        """`label_update.cam_candidates` with this run's keys: scores, every class's box (and its map)."""
        size = label_pass_size(self.cfg)
        return label_update.cam_candidates(self.classifier, images, (size, size), self.ccd.CAM_THRESHOLD,
                                           self.ccd.BOX_RULE, self.ccd.BOX_GROW, return_maps=return_maps)

    def cam_selection(self, loader, what):
        """The update's first pass over `loader` (every training image): (scores [N, C], boxes
        [N, C, 4], selected [N, C]: the classes passing the calibrated threshold)."""
        scores, boxes = self.score_pass(loader, lambda b: self.cam_candidates(b["img_ccd_label"]), "CCD CAM boxes")
        if self.ccd.CALIBRATION == "walk":
            generator = torch.Generator().manual_seed(self.seed)
            threshold, mean_count = cam.calibrate_threshold_walk(scores, self.ccd.BOUND, generator=generator)
        else:
            threshold, mean_count = cam.calibrate_threshold(scores, self.ccd.BOUND)
        print(f"CCD {what}: class threshold {threshold:.3f} selects {mean_count:.2f} classes per image")
        return scores, boxes, scores >= threshold

    def update_labels(self):
        """CCD's CAM-guided label update of every training image (batched)."""
        ccd = self.ccd
        loader = self.dm.make_loader(self.dm.dataset.train_u, views=("ccd_label", "ccd_crops"))
        _, boxes, selected = self.cam_selection(loader, "update")
        generator = torch.Generator().manual_seed(self.seed)
        long_side = ccd.CROP_LONG_SIDE if ccd.CROPS == "aspect" else None

        def crops(batch):
            rows = batch["index"].cpu()  # this rank's images
            image_index, class_index = selected[rows].nonzero(as_tuple=True)
            return label_update.crops_update(
                batch["img_ccd_crops"], boxes[rows][image_index, class_index].to(self.device),
                image_index.to(self.device), self.encode, self.text_features, self.table.targets[rows].to(self.device),
                self.table.bias.to(self.device), ccd.RATIO, ccd.LS_COEFF, ccd.CLAMP_LOCAL, ccd.CROPS_PER_CLASS,
                ccd.CROP_JITTER, generator, crop_size=tuple(self.cfg.INPUT.SIZE), logit_scale=ccd.CLIP_SCALE,
                long_side=long_side).labels

        self.table.targets = self.score_pass(loader, crops, "CCD crops through CLIP")

    # ---------------------------------------------------------------- training
    def first_selectable(self):
        """The first (0-based) epoch the rule may pick: 2 as released; with SELECT_AFTER_UPDATE
        (ours) two epochs after the update, so all three mAPs it compares are on updated labels."""
        return self.ccd.WARMUP_EPOCHS + 2 if self.ccd.SELECT_AFTER_UPDATE and self.ccd.UPDATE else 2

    def build_unlabeled(self):
        """The label table (the unlabeled-data strategy, saved in every epoch checkpoint) from
        LABELS' source; for ROLE also its learned label estimates (a registered model)."""
        table = LabelTable(self, *LABEL_SOURCES[self.ccd.LABELS](self), self.first_selectable())
        if self.ccd.LOSS == "role":
            self.estimator = losses.LabelEstimator(table.targets, seed=self.seed).to(self.device)
            groups = [{"params": list(self.estimator.parameters()), "lr": self.cfg.OPTIM.LR * self.ccd.ROLE_LR_MULT}]
            optim = build_optimizer(self.estimator, self.cfg.OPTIM, param_groups=groups)
            self.register_model("label_estimator", self.estimator, optim, build_lr_scheduler(optim, self.cfg.OPTIM))
        return table

    def before_train(self):
        super().before_train()  # builds the table, then resumes the models and the table
        self.table = self.unlabeled
        self.report_labels("initial" if self.start_epoch == 0 else "resumed")

    def report_labels(self, what):
        if self.hidden_labels.sum() > 0:
            value = mean_average_precision(self.table.targets, self.hidden_labels)
            print(f"epoch [{self.epoch + 1}/{self.max_epoch}] pseudo-labels ({what}): mAP {value:.2f} against the hidden labels")
            self.write_scalar("train/pseudo_label_mAP", value, self.epoch)

    def before_epoch(self):
        super().before_epoch()
        if self.ccd.UPDATE and self.epoch == self.ccd.WARMUP_EPOCHS:
            self.update_labels()
            self.report_labels("after the CAM-guided update")
        self.epoch_scores, self.epoch_index = [], []

    def compute_loss(self, batch_x, batch_u):
        batch = batch_u  # no labeled data: every batch is of the training images
        index = batch["index"]
        logits = self.classifier(self.to_device(batch, "img_ccd_train")).float()
        self.epoch_scores.append(logits.detach().sigmoid().cpu())  # the label-free rule's training scores
        self.epoch_index.append(index)
        targets, weights = self.table.rows(index, self.device)
        out = {f"loss_{self.ccd.LOSS}": LOSSES[self.ccd.LOSS](self, logits, targets, weights, index)}
        if self.ccd.CONSISTENCY and self.epoch >= self.ccd.WARMUP_EPOCHS:
            second = self.classifier(self.to_device(batch, "img_ccd_jitter")).float()
            out["loss_consistency"] = self.ccd.CONSISTENCY_WEIGHT * losses.consistency_loss(logits, second)
        return out

    def after_epoch(self):
        """The released label-free rule on the epoch's training mAP against the pseudo-labels,
        then the engine's epoch end (its checkpoint holds the label table)."""
        index = torch.cat(self.epoch_index)
        scores = distributed.gather_rows(torch.cat(self.epoch_scores), index, len(self.table))
        trained = torch.zeros(len(self.table), dtype=torch.bool)
        trained[distributed.gather_cat(index)] = True  # every rank's images, in index order
        picked = self.table.record_epoch(self.epoch, scores, trained)
        print(f"epoch [{self.epoch + 1}/{self.max_epoch}] training mAP against the pseudo-labels {self.table.history[-1]:.2f}")
        self.write_scalar("train/mAP_vs_pseudo_labels", self.table.history[-1], self.epoch)
        if picked:
            print(f"CCD: label-free selection picks epoch {self.epoch + 1}")
            self.save_model(self.epoch, self.output_dir, model_name=SELECTED)
        super().after_epoch()

    # ---------------------------------------------------------------- results
    def after_train(self):
        """Evaluate the last model (the engine's after_train) and the selected one."""
        super().after_train()
        final = dict(self.evaluator.last_results)
        selected = self.table.selected if self.table.selected >= 0 else self.max_epoch - 1
        if self.table.selected < 0:
            print("CCD: the label-free rule picked no epoch: the last epoch is the selected model")
        if selected != self.max_epoch - 1:
            print(f"Deploy the model the label-free rule selected (epoch {selected + 1})")
            self.load_selected()
            self.test()
        results = self.evaluator.last_results
        results.update({f"final_{name}": value for name, value in final.items()}, selected_epoch=selected + 1)
        if self.hidden_labels.sum() > 0:  # what the classifier learned from, against the hidden labels
            results["labels_initial_mAP"] = mean_average_precision(self.table.initial, self.hidden_labels)
            results["labels_final_mAP"] = mean_average_precision(self.table.targets, self.hidden_labels)

    def load_selected(self):
        path = osp.join(self.output_dir, "classifier", SELECTED)
        checkpoint = distributed.on_main(lambda: load_checkpoint(path))  # rank 0 wrote it, rank 0 reads it
        self.classifier.load_state_dict(checkpoint["state_dict"])

    @torch.no_grad()
    def visualize(self, folder):
        """--viz: the update's CAM -> box -> crop, run now on the deployed classifier, for the
        first TRAINER.VIZ_IMAGES training images (each selected class; no jittered crops)."""
        loader = self.dm.make_loader(self.dm.dataset.train_u, views=("ccd_label",))
        scores, boxes, selected = self.cam_selection(loader, "--viz")  # every rank: the threshold sees all images
        if not distributed.is_main():
            return
        few = self.dm.dataset.train_u[: self.cfg.TRAINER.VIZ_IMAGES]
        batch = self.dm.batch(few, views=("ccd_label", "ccd_crops"))
        image_index, class_index = selected[: len(few)].nonzero(as_tuple=True)
        with self.autocast():
            maps = self.cam_candidates(self.to_device(batch, "img_ccd_label"), return_maps=True)[2].float().cpu()
            crops, _ = label_update.cut_crops(self.to_device(batch, "img_ccd_crops"),
                                              boxes[image_index, class_index].to(self.device),
                                              image_index.to(self.device), crop_size=tuple(self.cfg.INPUT.SIZE))
            probs = label_update.crop_probs(self.encode, crops, self.text_features, self.ccd.CLIP_SCALE).float().cpu()
        hidden = self.hidden_labels[: len(few)] if self.hidden_labels.sum() > 0 else None
        viz.ccd_cam_figures(folder, batch["img_ccd_crops"], clip_normalisation(self.cfg), self.classnames,
                            scores, boxes, maps, crops, probs, image_index, class_index, hidden)

