"""CCD: classifier-guided CLIP distillation for unsupervised multi-label classification.

Kim & Shim, "Classifier-guided CLIP Distillation for Unsupervised Multi-label
Classification", as released (github.com/k0u-id/CCD), generalised to any dataset and
class list. A torchvision classifier with class activation maps learns from CLIP:
1. initial pseudo-labels: CLIP's softmax(CLIP_SCALE * cos) over the classes of the whole
   image, template DATASET.PROMPT_TEMPLATE ("a photo of the {}."); images whose entropy
   exceeds MAX_ENTROPY are unreliable (loss weight UNRELIABLE_WEIGHT). Computed once per
   (CLIP weights, class names, template, image list, view) and cached on disk
   (`CACHE_DIR`), shared by every seed and every task-B baseline;
2. CLIP's class bias: the mean top-1 probability of each class over the reliable images
   it wins (a class never top-1 gets the others' mean); labels debiased as
   clamp(max(p, 1/LS_COEFF) / bias, 0, 1);
3. the classifier (BACKBONE, local ImageNet WEIGHTS, the embedded world's pretrained ones
   on synth_ml, or random init with a warning; a 1x1
   conv gives one CAM per class, positive CAM values x CAM_COEFF; global average pool),
   Adam with the head at HEAD_LR_MULT x the backbone's LR, soft-target BCE;
4. WARMUP_EPOCHS epochs on the debiased labels;
5. one CAM-guided label update (UPDATE): the classes whose sigmoid passes a threshold
   calibrated so BOUND..BOUND+2 classes pass per image; each CAM > CAM_THRESHOLD gives a
   box grown by BOX_GROW px (at the released 640 px), cut and scored by CLIP; the max over
   an image's crops, floored and debiased, blended with RATIO of the old label;
6. from the update on, a second view's consistency loss (CONSISTENCY);
7. label-free model selection (the released rule: the first epoch >= 2 at which the
   change of the training mAP against the pseudo-labels starts to grow); the final and
   the selected model are both evaluated, the selected one is the headline.
Where we differ from the release (each a key): the box is the bounding box of the hot
pixels (BOX_RULE released: its first/last hot pixel), CLIP sees its own preprocessing
(CLIP_VIEW), the calibration judges all images at once, a class never top-1 gets the
mean bias instead of NaN, and a class without positives is left out of mAP (it is AP 0
there). The task-B baselines are this trainer with other LABELS / LOSS: CDUL's
global + 3x3-tile initialisation, CLIP's top-1 class as a single positive with the AN,
AN-LS or ROLE loss, and the true labels (`true`, the fully supervised upper row).
Distributed (torchrun): CLIP's labels, the CAM pass and the crops pass of the update and
the selection's training scores are sharded over the ranks and gathered; the classifier's
batch norm uses the global batch's statistics; rank 0 reads and writes the label cache and
ccd_state.pt. Exact for the released one crop per class (extra jittered crops draw their
jitter per rank).
"""
import hashlib
import json
import os
import os.path as osp

import torch
import torchvision.transforms as T
from tqdm import tqdm

from leclip import distributed, viz
from leclip.backbone import class_text_features
from leclip.backbone.loader import resolve_checkpoint
from leclip.config import add_defaults
from leclip.dassl import TRAINER_REGISTRY, build_lr_scheduler, build_optimizer
from leclip.data import register_view
from leclip.data.transforms import IMAGENET_MEAN, IMAGENET_STD, interpolation, to_normalized_tensor
from leclip.files import write_atomic
from leclip.metrics import mean_average_precision
from leclip.multilabel import cam, clip_labels, label_update, losses, selection
from leclip.trainer_base import CLIPTrainer

add_defaults(
    {
        "TRAINER.CCD.BACKBONE": "resnet50",  # any torchvision CNN (released: resnet50)
        # local ImageNet weights of BACKBONE; "embedded": the world-pretrained ones shipped for it
        # (synth_ml); empty: random init (a warning)
        "TRAINER.CCD.WEIGHTS": "",
        "TRAINER.CCD.INPUT_SIZE": 448,  # the classifier's square input (released 448)
        "TRAINER.CCD.CAM_COEFF": 3.0,  # positive CAM values x this, from the first step (released 3)
        "TRAINER.CCD.HEAD_LR_MULT": 10.0,  # the 1x1 conv's LR multiplier (released 10)
        # what the classifier learns from: clip (CCD) | cdul | top1 (single positive) | true (labels)
        "TRAINER.CCD.LABELS": "clip",
        "TRAINER.CCD.LOSS": "bce",  # bce (soft targets) | an | an_ls | role (single-positive losses)
        "TRAINER.CCD.CLIP_SCALE": 100.0,  # softmax(100 cos), as released (not the model's logit scale)
        # (ours) CLIP's input: "test" = its own preprocessing; "squash" = the whole image squashed
        # to CLIP's input size (the released geometry)
        "TRAINER.CCD.CLIP_VIEW": "test",
        "TRAINER.CCD.CACHE_DIR": "",  # where CLIP's labels are cached; empty: <DATASET.ROOT>/leclip_cache/ccd
        "TRAINER.CCD.MAX_ENTROPY": 2.0,  # images above it are unreliable (released 2)
        "TRAINER.CCD.UNRELIABLE_WEIGHT": 1.0,  # their loss weight (released loss_coeff 1)
        "TRAINER.CCD.LS_COEFF": 20.0,  # label-smoothing floor 1/LS_COEFF (released 20)
        "TRAINER.CCD.DEBIAS": True,  # divide by CLIP's class bias
        "TRAINER.CCD.UPDATE": True,  # the CAM-guided label update after the warm-up
        "TRAINER.CCD.WARMUP_EPOCHS": 2,
        "TRAINER.CCD.BOUND": 4,  # the update selects BOUND..BOUND+2 classes per image on average
        "TRAINER.CCD.CAM_THRESHOLD": 0.95,
        "TRAINER.CCD.BOX_RULE": "bbox",  # (ours) bbox of the hot pixels | released
        "TRAINER.CCD.BOX_GROW": 80.0,  # px at the released 640 px input, scaled with the size
        "TRAINER.CCD.RATIO": 0.2,  # share of the old label in the blend (released 0.2)
        "TRAINER.CCD.CLAMP_LOCAL": False,  # (released False) clamp the crops' debiased score before the blend
        "TRAINER.CCD.CROPS_PER_CLASS": 1,  # (released 1) >1: randomly jittered crops around each box
        "TRAINER.CCD.CROP_JITTER": 0.1,  # (ours) edge jitter of the extra crops, x the box side
        # (ours) True: the selection rule may pick an epoch only once it compares updated labels
        "TRAINER.CCD.SELECT_AFTER_UPDATE": False,
        "TRAINER.CCD.CONSISTENCY": True,  # the second view's consistency loss from the update on
        "TRAINER.CCD.CONSISTENCY_WEIGHT": 1.0,
        # the second view's ColorJitter (brightness, contrast, saturation, hue), as released
        "TRAINER.CCD.JITTER": (0.5, 0.5, 0.5, 0.5),
        "TRAINER.CCD.CDUL_GRID": 3,  # CDUL: grid x grid tiles
        "TRAINER.CCD.CDUL_ZETA": 0.5,  # (ours) CDUL's tile threshold
        "TRAINER.CCD.AN_SMOOTHING": 0.1,  # AN-LS's label smoothing (Cole et al.)
        "TRAINER.CCD.ROLE_EXPECTED_POSITIVES": 2.0,  # (ours) ROLE's expected positives per image
        "TRAINER.CCD.ROLE_LR_MULT": 100.0,  # (ours) LR of ROLE's label estimates, x OPTIM.LR
    }
)

LABEL_SOURCES = ("clip", "cdul", "top1", "true")
LOSSES = ("bce", "an", "an_ls", "role")
SINGLE_POSITIVE = ("an", "an_ls", "role")
CLIP_VIEWS = ("test", "squash")
SELECTED = "model-selected.pth.tar"  # the checkpoint of the label-free rule's epoch
TRAIN_VIEWS = ("ccd_train", "ccd_jitter")  # the released two views: flip, and flip + colour jitter


def _classifier_view(cfg, train=False, jitter=False, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """The whole image squashed to the classifier's square input (as released)."""
    size = cfg.TRAINER.CCD.INPUT_SIZE
    ops = [T.Resize((size, size), interpolation=interpolation(cfg))]
    if jitter:
        ops.append(T.ColorJitter(*cfg.TRAINER.CCD.JITTER))
    if train:
        ops.append(T.RandomHorizontalFlip())
    return T.Compose(ops + [T.ToTensor(), T.Normalize(mean, std)])


def _squash_view(cfg):
    return to_normalized_tensor(cfg, [T.Resize(tuple(cfg.INPUT.SIZE), interpolation=interpolation(cfg))])


register_view("ccd_train", lambda cfg: _classifier_view(cfg, train=True))
register_view("ccd_jitter", lambda cfg: _classifier_view(cfg, train=True, jitter=True))
register_view("ccd_eval", _classifier_view)
# the CLIP-normalised image at the classifier's geometry, where the CAM boxes are cut
register_view("ccd_crops", lambda cfg: _classifier_view(cfg, mean=cfg.INPUT.PIXEL_MEAN, std=cfg.INPUT.PIXEL_STD))
register_view("clip_squash", _squash_view)


def file_digest(path, chunk=1 << 20):
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


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

    @property
    def use_unlabeled(self):
        return True  # the training images, whose labels the classifier never reads

    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        ccd = cfg.TRAINER.CCD
        for key, allowed in (("LABELS", LABEL_SOURCES), ("LOSS", LOSSES), ("CLIP_VIEW", CLIP_VIEWS),
                             ("BOX_RULE", cam.BOX_RULES)):
            if ccd[key] not in allowed:
                raise ValueError(f"TRAINER.CCD.{key}={ccd[key]!r}: use one of {tuple(allowed)}")
        if (ccd.LOSS in SINGLE_POSITIVE) != (ccd.LABELS == "top1"):
            raise ValueError(
                f"TRAINER.CCD.LOSS={ccd.LOSS!r} with LABELS={ccd.LABELS!r}: the single-positive losses "
                "(an, an_ls, role) train on LABELS top1, and LABELS top1 needs one of them"
            )
        if ccd.LABELS != "clip" and (ccd.UPDATE or ccd.DEBIAS or ccd.CONSISTENCY):
            raise ValueError(
                f"TRAINER.CCD.LABELS={ccd.LABELS!r}: the label update, debiasing and consistency are CCD's "
                "(LABELS clip); set UPDATE, DEBIAS and CONSISTENCY False"
            )
        if ccd.WARMUP_EPOCHS < 0 or ccd.INPUT_SIZE < 32 or ccd.CROPS_PER_CLASS < 1:
            raise ValueError(
                f"TRAINER.CCD: WARMUP_EPOCHS={ccd.WARMUP_EPOCHS}, INPUT_SIZE={ccd.INPUT_SIZE}, "
                f"CROPS_PER_CLASS={ccd.CROPS_PER_CLASS}: use WARMUP_EPOCHS >= 0, INPUT_SIZE >= 32, CROPS_PER_CLASS >= 1"
            )
        jitter = list(ccd.JITTER)
        if len(jitter) != 4 or min(jitter) < 0 or jitter[3] > 0.5:
            raise ValueError(
                f"TRAINER.CCD.JITTER={ccd.JITTER!r}: give (brightness, contrast, saturation, hue), each >= 0 "
                "and hue <= 0.5 (as released: (0.5, 0.5, 0.5, 0.5))"
            )
        if cfg.TRAINER.SSL.MODE != "none":
            raise ValueError("CCD learns from CLIP's pseudo-labels: set TRAINER.SSL.MODE none")
        if list(cfg.DATALOADER.TRAIN_U.VIEWS) != list(TRAIN_VIEWS):
            raise ValueError(
                f"DATALOADER.TRAIN_U.VIEWS={list(cfg.DATALOADER.TRAIN_U.VIEWS)}: CCD trains on its two views, "
                f"set {list(TRAIN_VIEWS)}"
            )

    def build_data_loader(self):
        super().build_data_loader()
        if self.dm.dataset.train_x:
            raise ValueError(
                f"CCD is unsupervised (task B), but {self.cfg.DATASET.NAME} has labeled images in this setting: "
                "use DATASET.SETTING unsup (for a labeled ratio, task C, use csa)"
            )
        self.test_loader = self.dm.make_loader(self.dm.dataset.test, views="ccd_eval", stream="test")
        self.hidden_labels = torch.tensor([d.label for d in self.dm.dataset.train_u], dtype=torch.float32)

    # ---------------------------------------------------------------- models
    def build_model(self):
        cfg = self.cfg.TRAINER.CCD
        self.clip_model = self.load_clip().to(self.device)
        template = self.cfg.DATASET.PROMPT_TEMPLATE
        self.text_features = class_text_features(self.clip_model, self.classnames, template, self.device)
        classifier = cam.CAMClassifier(self.num_classes, cfg.BACKBONE, cfg.WEIGHTS, cfg.CAM_COEFF).to(self.device)
        self.classifier = distributed.global_batch_norm(classifier)  # N processes normalise as one batch
        groups = self.classifier.param_groups(self.cfg.OPTIM.LR, cfg.HEAD_LR_MULT)
        optim = build_optimizer(self.classifier, self.cfg.OPTIM, param_groups=groups)
        self.register_model("classifier", self.classifier, optim, build_lr_scheduler(optim, self.cfg.OPTIM))
        self.scaler = torch.amp.GradScaler("cuda") if self.use_amp else None
        print(
            f"CCD: {cfg.BACKBONE} classifier at {cfg.INPUT_SIZE} px learning from {cfg.LABELS} labels "
            f"({cfg.LOSS} loss); CLIP {self.cfg.MODEL.BACKBONE.NAME} with {template!r}"
        )

    def encode_classes(self):
        return None  # the classifier has no class side

    def forward_train(self, images, classes=None):
        return {"logits": self.classifier(images)}

    def predict(self, images, classes):
        """(sigmoid scores [B, C], positives = scores >= 0.5): per-class decisions."""
        scores = self.classifier(images).float().sigmoid()
        return scores, scores >= 0.5

    # ---------------------------------------------------------------- CLIP's labels
    def cache_dir(self):
        cfg = self.cfg
        return cfg.TRAINER.CCD.CACHE_DIR or osp.join(osp.abspath(cfg.DATASET.ROOT or "."), "leclip_cache", "ccd")

    def label_key(self, kind):
        """What CLIP's labels depend on; its digest names the cache file."""
        cfg = self.cfg
        root = osp.abspath(cfg.DATASET.ROOT or ".")
        images = "\n".join(osp.relpath(d.impath, root) for d in self.dm.dataset.train_u)
        weights = resolve_checkpoint(cfg.MODEL.BACKBONE.NAME, cfg.MODEL.BACKBONE.PATH)
        return {
            "kind": kind,
            "clip": file_digest(weights),
            "classnames": list(self.classnames),
            "template": cfg.DATASET.PROMPT_TEMPLATE,
            "images": hashlib.sha1(images.encode()).hexdigest(),
            "count": len(self.dm.dataset.train_u),
            "view": [cfg.TRAINER.CCD.CLIP_VIEW, list(cfg.INPUT.SIZE), cfg.INPUT.INTERPOLATION,
                     list(cfg.INPUT.PIXEL_MEAN), list(cfg.INPUT.PIXEL_STD)],
            "clip_scale": cfg.TRAINER.CCD.CLIP_SCALE,
        }

    def cached_clip_labels(self, kind):
        """CLIP's labels [N, C] of the training images: `global` (the whole image) or
        `cdul` (CDUL's global + tile aggregation), from the cache or computed once."""
        ccd = self.cfg.TRAINER.CCD
        key = self.label_key(kind if kind == "global" else f"cdul-grid{ccd.CDUL_GRID}-zeta{ccd.CDUL_ZETA:g}")
        digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        path = osp.join(self.cache_dir(), f"{kind}-{digest}.pt")

        def read_cache():
            if osp.isfile(path):
                try:
                    cached = torch.load(path, map_location="cpu", weights_only=True)
                    if cached.get("key") == key:
                        print(f"CCD: CLIP's {kind} labels from the cache {path}")
                        return cached["labels"]
                except (OSError, RuntimeError, ValueError, AttributeError) as err:
                    print(f"CCD: unreadable label cache {path} ({err}): computing the labels again")
            return None

        labels = distributed.on_main(read_cache)  # rank 0 alone reads and writes the cache
        if labels is not None:
            return labels
        labels = self.compute_clip_labels(kind)
        if not distributed.is_main():
            return labels
        try:
            os.makedirs(osp.dirname(path), exist_ok=True)
            write_atomic(path, lambda tmp: torch.save({"key": key, "labels": labels}, tmp))
            print(f"CCD: CLIP's {kind} labels cached in {path}")
        except OSError as err:
            print(f"CCD: cannot cache CLIP's labels in {path} ({err}; set TRAINER.CCD.CACHE_DIR): they are "
                  "computed again on the next run")
        return labels

    @torch.no_grad()
    def compute_clip_labels(self, kind):
        ccd = self.cfg.TRAINER.CCD
        view = "clip_squash" if ccd.CLIP_VIEW == "squash" else "test"
        loader = self.dm.make_loader(self.dm.dataset.train_u, views=view)
        encode = self.clip_model.encode_image
        labels = []
        for batch in tqdm(loader, desc=f"CLIP {kind} labels", unit="batch", disable=None):
            images = self.to_device(batch)
            with self.autocast():
                if kind == "global":
                    labels.append(label_update.clip_image_probs(encode, images, self.text_features, ccd.CLIP_SCALE))
                else:
                    labels.append(label_update.cdul_initial_labels(
                        encode, images, self.text_features, ccd.CDUL_GRID, ccd.CDUL_ZETA, ccd.CLIP_SCALE
                    ))
        return distributed.gather_shards(torch.cat(labels).float())

    def initial_targets(self):
        """(targets [N, C], per-image loss weights [N]) before any update; sets the bias."""
        ccd = self.cfg.TRAINER.CCD
        weights = torch.ones(len(self.hidden_labels))
        if ccd.LABELS == "true":
            return self.hidden_labels.clone(), weights
        if ccd.LABELS == "cdul":
            return self.cached_clip_labels("cdul"), weights
        probs = self.cached_clip_labels("global")
        if ccd.LABELS == "top1":
            return clip_labels.single_positive(probs), weights
        flagged = clip_labels.unreliable(probs, ccd.MAX_ENTROPY)
        weights[flagged] = ccd.UNRELIABLE_WEIGHT
        self.bias = clip_labels.class_bias(probs, ~flagged) if ccd.DEBIAS else torch.ones(probs.shape[1])
        print(f"CCD: {int(flagged.sum())} of {len(probs)} images unreliable (entropy > {ccd.MAX_ENTROPY:g})")
        if ccd.DEBIAS:
            shown = ", ".join(f"{name} {b:.3f}" for name, b in zip(self.classnames, self.bias.tolist()))
            print(f"CCD: CLIP's class bias: {shown}")
        return clip_labels.debias(probs, self.bias, ccd.LS_COEFF), weights

    def report_labels(self, what):
        if self.hidden_labels.sum() > 0:
            value = mean_average_precision(self.targets, self.hidden_labels)
            print(f"epoch [{self.epoch + 1}/{self.max_epoch}] pseudo-labels ({what}): mAP {value:.2f} against the hidden labels")

    # ---------------------------------------------------------------- the update
    def cam_candidates(self, classifier_images, return_maps=False):
        """`label_update.cam_candidates` with this run's keys: scores, every class's box (and its map)."""
        ccd = self.cfg.TRAINER.CCD
        return label_update.cam_candidates(
            self.classifier, classifier_images, (ccd.INPUT_SIZE, ccd.INPUT_SIZE), ccd.CAM_THRESHOLD, ccd.BOX_RULE,
            ccd.BOX_GROW, return_maps=return_maps,
        )

    @torch.no_grad()
    def cam_selection(self, loader, what):
        """The update's first pass over `loader` (every training image): (scores [N, C],
        boxes [N, C, 4], selected [N, C]: the classes passing the calibrated threshold)."""
        scores, boxes = [], []
        for batch in tqdm(loader, desc="CCD CAM boxes", unit="batch", disable=None):
            with self.autocast():
                s, b = self.cam_candidates(self.to_device(batch, "img_ccd_eval"))
            scores.append(s.float().cpu())
            boxes.append(b.float().cpu())
        # every image's scores and boxes, on every rank: one threshold from all of them
        scores, boxes = distributed.gather_shards(torch.cat(scores)), distributed.gather_shards(torch.cat(boxes))
        threshold, mean_count = cam.calibrate_threshold(scores, self.cfg.TRAINER.CCD.BOUND)
        print(f"CCD {what}: class threshold {threshold:.3f} selects {mean_count:.2f} classes per image")
        return scores, boxes, scores >= threshold

    @torch.no_grad()
    def update_labels(self):
        """CCD's CAM-guided label update of every training image (batched)."""
        ccd = self.cfg.TRAINER.CCD
        loader = self.dm.make_loader(self.dm.dataset.train_u, views=("ccd_eval", "ccd_crops"))
        scores, boxes, selected = self.cam_selection(loader, "update")
        generator = torch.Generator().manual_seed(self.seed)
        new, done = [], []
        clip_size = tuple(self.cfg.INPUT.SIZE)
        for batch in tqdm(loader, desc="CCD crops through CLIP", unit="batch", disable=None):
            crops_source = self.to_device(batch, "img_ccd_crops")
            rows = batch["index"]  # this rank's images
            image_index, class_index = selected[rows].nonzero(as_tuple=True)
            with self.autocast():
                update = label_update.crops_update(
                    crops_source, boxes[rows][image_index, class_index].to(self.device), image_index.to(self.device),
                    self.clip_model.encode_image, self.text_features, self.targets[rows].to(self.device),
                    self.bias.to(self.device), ccd.RATIO, ccd.LS_COEFF, ccd.CLAMP_LOCAL, ccd.CROPS_PER_CLASS,
                    ccd.CROP_JITTER, generator, crop_size=clip_size, logit_scale=ccd.CLIP_SCALE,
                )
            new.append(update.labels.float().cpu())
            done.append(rows)
        self.targets = distributed.gather_rows(torch.cat(new), torch.cat(done), len(self.targets))

    # ---------------------------------------------------------------- training
    def state_path(self):
        return osp.join(self.output_dir, "ccd_state.pt")

    def save_state(self):
        if not distributed.is_main():
            return
        state = {"targets": self.targets, "history": torch.tensor(self.history), "selected": self.selected}
        write_atomic(self.state_path(), lambda tmp: torch.save(state, tmp))

    def before_train(self):
        self.targets, self.weights = self.initial_targets()
        self.initial_labels = self.targets.clone()
        self.history, self.selected = [], -1
        if self.cfg.TRAINER.CCD.LOSS == "role":
            self.setup_label_estimator()
        super().before_train()  # resumes the registered models
        state = None
        if self.start_epoch > 0:
            path = self.state_path()
            state = distributed.on_main(
                lambda: torch.load(path, map_location="cpu", weights_only=True) if osp.isfile(path) else None
            )
        if state is not None:
            self.targets, self.history, self.selected = state["targets"], state["history"].tolist(), state["selected"]
            print(f"CCD: resumed the pseudo-labels and selection history of epochs 1..{len(self.history)}")
        self.epoch = self.start_epoch
        self.report_labels("initial" if self.start_epoch == 0 else "resumed")

    def setup_label_estimator(self):
        ccd = self.cfg.TRAINER.CCD
        self.estimator = losses.LabelEstimator(self.targets, seed=self.seed).to(self.device)
        groups = [{"params": list(self.estimator.parameters()), "lr": self.cfg.OPTIM.LR * ccd.ROLE_LR_MULT}]
        optim = build_optimizer(self.estimator, self.cfg.OPTIM, param_groups=groups)
        self.register_model("label_estimator", self.estimator, optim, build_lr_scheduler(optim, self.cfg.OPTIM))

    def run_epoch(self):
        ccd = self.cfg.TRAINER.CCD
        if ccd.UPDATE and self.epoch == ccd.WARMUP_EPOCHS:
            self.update_labels()
            self.report_labels("after the CAM-guided update")
        self.epoch_scores, self.epoch_index = [], []
        self.set_model_mode("train")
        loader = self.train_loader_u
        self.num_batches = len(loader)
        for self.batch_idx, batch in enumerate(loader):
            summary = self.forward_backward(batch)
            if (self.batch_idx + 1) % max(self.cfg.TRAIN.PRINT_FREQ, 1) == 0 or self.batch_idx + 1 == self.num_batches:
                shown = " ".join(f"{k} {v:.4f}" for k, v in summary.items())
                print(f"epoch [{self.epoch + 1}/{self.max_epoch}] batch [{self.batch_idx + 1}/{self.num_batches}] {shown}")
        self.select()
        self.save_state()

    def select(self):
        """The released label-free rule on the epoch's training mAP against the pseudo-labels."""
        index = torch.cat(self.epoch_index)
        scores = distributed.gather_rows(torch.cat(self.epoch_scores), index, len(self.targets))
        trained = torch.zeros(len(self.targets), dtype=torch.bool)
        trained[distributed.gather_cat(index)] = True  # every rank's images, in index order
        self.history.append(selection.pseudo_label_map(scores[trained], self.targets[trained]))
        print(f"epoch [{self.epoch + 1}/{self.max_epoch}] training mAP against the pseudo-labels {self.history[-1]:.2f}")
        if self.selected < 0 and selection.select_epoch(self.history, self.first_selectable()) == self.epoch:
            self.selected = self.epoch
            print(f"CCD: label-free selection picks epoch {self.epoch + 1}")
            self.save_model(self.epoch, self.output_dir, model_name=SELECTED)

    def first_selectable(self):
        """The first (0-based) epoch the rule may pick: 2 as released; with SELECT_AFTER_UPDATE
        (ours) two epochs after the update, so all three mAPs it compares are on updated labels."""
        ccd = self.cfg.TRAINER.CCD
        return ccd.WARMUP_EPOCHS + 2 if ccd.SELECT_AFTER_UPDATE and ccd.UPDATE else 2

    def forward_backward(self, batch):
        with self.autocast():
            losses_ = self.step_losses(batch)
            loss = sum(losses_.values())
        self.backward_and_update(loss)
        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()
        return {**{name: value.item() for name, value in losses_.items()}, "loss": loss.item()}

    def compute_loss(self, batch, batch_u=None):
        ccd = self.cfg.TRAINER.CCD
        index = batch["index"]
        logits = self.classifier(self.to_device(batch, "img_ccd_train"))
        self.epoch_scores.append(logits.detach().float().sigmoid().cpu())
        self.epoch_index.append(index)
        targets = self.targets[index].to(self.device)
        if ccd.LOSS == "bce":
            out = {"loss_bce": losses.soft_bce(logits.float(), targets, self.weights[index].to(self.device))}
        elif ccd.LOSS == "an":
            out = {"loss_an": losses.assume_negative_loss(logits.float(), targets)}
        elif ccd.LOSS == "an_ls":
            out = {"loss_an_ls": losses.assume_negative_ls_loss(logits.float(), targets, ccd.AN_SMOOTHING)}
        else:
            estimates = self.estimator(index.to(self.device))
            out = {"loss_role": losses.role_loss(logits.float(), estimates, targets, ccd.ROLE_EXPECTED_POSITIVES)}
        if ccd.CONSISTENCY and self.epoch >= ccd.WARMUP_EPOCHS:
            second = self.classifier(self.to_device(batch, "img_ccd_jitter"))
            out["loss_consistency"] = ccd.CONSISTENCY_WEIGHT * losses.consistency_loss(logits.float(), second.float())
        return out

    # ---------------------------------------------------------------- results
    def after_train(self):
        """Evaluate the last model (the engine's after_train) and the selected one."""
        super().after_train()
        final = dict(self.evaluator.last_results)
        selected = self.selected if self.selected >= 0 else self.max_epoch - 1
        if self.selected < 0:
            print("CCD: the label-free rule picked no epoch: the last epoch is the selected model")
        if selected != self.max_epoch - 1:
            print(f"Deploy the model the label-free rule selected (epoch {selected + 1})")
            self.load_selected()
            self.test()
        results = self.evaluator.last_results
        for name, value in final.items():
            results[f"final_{name}"] = value
        results["selected_epoch"] = selected + 1
        if self.hidden_labels.sum() > 0:  # what the classifier learned from, against the hidden labels
            results["labels_initial_mAP"] = mean_average_precision(self.initial_labels, self.hidden_labels)
            results["labels_final_mAP"] = mean_average_precision(self.targets, self.hidden_labels)

    # ---------------------------------------------------------------- figures
    @torch.no_grad()
    def visualize(self, folder):
        """--viz: the update's CAM -> box -> crop, run now (on the deployed classifier), on the
        first TRAINER.VIZ_IMAGES training images: each class the calibrated threshold
        selects, its CAM over the image, its box and the crop CLIP scores (the box itself:
        no jittered extra crops)."""
        ccd = self.cfg.TRAINER.CCD
        loader = self.dm.make_loader(self.dm.dataset.train_u, views=("ccd_eval",))
        scores, boxes, selected = self.cam_selection(loader, "--viz")  # every rank: the threshold sees all images
        if not distributed.is_main():
            return
        few = self.dm.dataset.train_u[: self.cfg.TRAINER.VIZ_IMAGES]
        batch = self.dm.batch(few, views=("ccd_eval", "ccd_crops"))
        with self.autocast():
            maps = self.cam_candidates(self.to_device(batch, "img_ccd_eval"), return_maps=True)[2].float().cpu()
        clip_images = self.to_device(batch, "img_ccd_crops")
        image_index, class_index = selected[: len(few)].nonzero(as_tuple=True)
        pairs = boxes[image_index, class_index].to(self.device)
        with self.autocast():
            crops, _ = label_update.cut_crops(clip_images, pairs, image_index.to(self.device),
                                              crop_size=tuple(self.cfg.INPUT.SIZE))
            crop_probs = label_update.clip_image_probs(
                self.clip_model.encode_image, crops, self.text_features, ccd.CLIP_SCALE
            ).float().cpu()
        mean, std = self.cfg.INPUT.PIXEL_MEAN, self.cfg.INPUT.PIXEL_STD
        for i in range(len(few)):
            rows = []
            for k in (image_index == i).nonzero().flatten().tolist():
                c = int(class_index[k])
                top = int(crop_probs[k].argmax())
                rows.append(viz.CamRow(
                    name=self.classnames[c], score=float(scores[i, c]), heat=maps[i, c].numpy(),
                    box=tuple(boxes[i, c].tolist()), crop=viz.to_rgb(crops[k], mean, std),
                    crop_note=f"crop: CLIP {self.classnames[c]} {float(crop_probs[k, c]):.2f}\n"
                              f"top {self.classnames[top]} {float(crop_probs[k, top]):.2f}",
                ))
            rows.sort(key=lambda row: -row.score)
            title = f"training image {i}"
            if self.hidden_labels.sum() > 0:  # a dataset with hidden labels: show them
                true = [self.classnames[c] for c in self.hidden_labels[i].nonzero().flatten().tolist()]
                title += f" (hidden labels: {', '.join(true) or 'none'})"
            image = viz.to_rgb(batch["img_ccd_crops"][i], mean, std)
            viz.cam_box_crop(osp.join(folder, f"ccd_cam_image{i}.png"), image, rows, title=title)
        print(f"--viz: CCD's CAM, box and crop of {len(few)} training images in {folder}")

    def load_selected(self):
        from leclip.dassl import load_checkpoint

        path = osp.join(self.output_dir, "classifier", SELECTED)
        checkpoint = distributed.on_main(lambda: load_checkpoint(path))  # rank 0 wrote it, rank 0 reads it
        self.classifier.load_state_dict(checkpoint["state_dict"])

