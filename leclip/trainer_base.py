"""`CLIPTrainer`: the base class of every LE-CLIP trainer.

A method is a small subclass (as in USB): it builds its model in `build_model`, says
how an image batch becomes outputs in `forward_train` / `forward_eval`, and may
override `supervised_loss`, `compute_loss` or `predict`. This class owns what every
method shares, on either engine (Dassl.pytorch or `leclip.engine`):

- data: LE-CLIP's DataManager (named views, multi-hot labels, hidden OOD labels);
- device and precision: CUDA when available, AMP there (`TRAINER.PREC`), fp32 on CPU;
- the semi-supervised recipe `TRAINER.SSL.MODE: none | fixmatch` (hard pseudo-labels
  from the weak view, loss on the strong view, filter F on confidence and ID score),
  with per-epoch diagnostics;
- testing: open-set (closed accuracy, balanced accuracy with the labeled-quantile
  threshold, AUROC) or multi-label (mAP, CF1, OF1), picked from the dataset's task.

Outputs of `forward_train` / `forward_eval` are dicts with at least `logits`
([B, K], already multiplied by the logit scale); `local_logits` ([B, N, K]) enables the
GL-MCM score.
"""
import time

import torch
import torch.nn.functional as F

from . import config  # noqa: F401  declares LE-CLIP's config keys on either engine
from . import evaluators  # noqa: F401  registers OpenSet/MultiLabel evaluators
from . import ssl
from .backbone import autocast, load_clip
from .dassl import ENGINE, TrainerX, TrainerXU, set_random_seed
from .engine.utils import epoch_seed
from .engine.trainer import SimpleTrainer as BuiltinSimpleTrainer


class CLIPTrainer(TrainerXU):
    # Trainers with nothing to learn (zero-shot) set this to False.
    learns = True

    # ---------------------------------------------------------------- set-up
    def check_cfg(self, cfg):
        modes = ("none", "fixmatch")
        if cfg.TRAINER.SSL.MODE not in modes:
            raise ValueError(f"TRAINER.SSL.MODE={cfg.TRAINER.SSL.MODE!r}: use one of {modes}")
        precisions = ("amp", "fp16", "fp32")
        if cfg.TRAINER.PREC not in precisions:
            raise ValueError(f"TRAINER.PREC={cfg.TRAINER.PREC!r}: use one of {precisions}")

    @property
    def use_unlabeled(self):
        return self.cfg.TRAINER.SSL.MODE == "fixmatch"

    def build_data_loader(self):
        # the built-in engine's wiring of LE-CLIP's DataManager, on either engine
        BuiltinSimpleTrainer.build_data_loader(self)
        if not self.use_unlabeled:
            self.train_loader_u = None
        self.task = getattr(self.dm.dataset, "task", "closed")
        if self.use_unlabeled and self.train_loader_u is None:
            raise ValueError(
                f"TRAINER.SSL.MODE fixmatch needs unlabeled data, but {self.cfg.DATASET.NAME} "
                "has no train_u in this setting; use TRAINER.SSL.MODE none"
            )

    @property
    def classnames(self):
        return self.dm.dataset.classnames

    def load_clip(self):
        cfg = self.cfg
        model = load_clip(cfg.MODEL.BACKBONE.NAME, path=cfg.MODEL.BACKBONE.PATH, device="cpu")
        for p in model.parameters():
            p.requires_grad_(False)
        return model

    @property
    def use_amp(self):
        return self.device.type == "cuda" and self.cfg.TRAINER.PREC in ("amp", "fp16")

    def autocast(self):
        return autocast(self.device, self.cfg.TRAINER.PREC)

    def setup_optimization(self, name, module):
        """Register `module` (its trainable parameters) with the cfg's optimizer."""
        from .dassl import build_lr_scheduler, build_optimizer

        params = [p for p in module.parameters() if p.requires_grad]
        self.optim = build_optimizer(params, self.cfg.OPTIM)
        self.sched = build_lr_scheduler(self.optim, self.cfg.OPTIM)
        self.register_model(name, module, self.optim, self.sched)
        self.scaler = torch.amp.GradScaler("cuda") if self.use_amp else None

    def trainer_state(self):
        """The filter's running threshold survives a resume (built-in engine)."""
        return {**super().trainer_state(), "ssl_threshold": self.ssl_filter.threshold}

    def load_trainer_state(self, state):
        super().load_trainer_state(state)
        self.ssl_filter.threshold = state.get("ssl_threshold", float("-inf"))

    def before_epoch(self):
        super().before_epoch()
        if ENGINE == "dassl":  # Dassl does not reseed per epoch; the built-in engine does
            seed = max(self.cfg.SEED, 0)
            set_random_seed(epoch_seed(seed, self.epoch))
            self.dm.set_epoch(self.epoch, seed)

    def before_train(self):
        self.ssl_filter = ssl.OODFilter(
            self.cfg.TRAINER.SSL.CONF_THRESH,
            self.cfg.TRAINER.SSL.SCORE,
            self.cfg.TRAINER.SSL.OOD_QUANTILE,
        )
        self.ssl_stats = ssl.PseudoLabelStats()
        super().before_train()

    # ---------------------------------------------------------------- training
    def run_epoch(self):
        self.ssl_stats.reset()
        if self.train_loader_u is None:
            TrainerX.run_epoch(self)
        else:
            TrainerXU.run_epoch(self)
        if self.train_loader_u is not None:
            print(f"epoch [{self.epoch + 1}/{self.max_epoch}] unlabeled: {self.ssl_stats.log_line()}")

    def forward_backward(self, batch_x, batch_u=None):
        with self.autocast():
            losses = self.compute_loss(batch_x, batch_u)
            loss = sum(losses.values())
        self.backward_and_update(loss)
        summary = {name: value.item() for name, value in losses.items()}
        summary["loss"] = loss.item()
        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()
        return summary

    def backward_and_update(self, loss):
        if self.scaler is None:
            self.model_backward_and_update(loss)
            return
        self.model_zero_grad()
        self.scaler.scale(loss).backward()
        for optim in self._optims.values():
            if optim is not None:
                self.scaler.step(optim)
        self.scaler.update()

    def to_device(self, batch, key="img"):
        return batch[key].to(self.device)

    def compute_loss(self, batch_x, batch_u):
        """Supervised loss on the labeled batch, plus FixMatch on the unlabeled one."""
        images, labels = self.to_device(batch_x), self.to_device(batch_x, "label")
        out_x = self.forward_train(images)
        losses = {"loss_x": self.supervised_loss(out_x, labels)}
        if batch_u is not None:
            losses["loss_u"] = self.cfg.TRAINER.SSL.LAMBDA * self.fixmatch_loss(out_x, batch_u)
        return losses

    def supervised_loss(self, out, labels):
        return F.cross_entropy(out["logits"], labels)

    def fixmatch_loss(self, out_x, batch_u, key="logits"):
        """FixMatch on `out[key]`: weak-view pseudo-labels, strong-view loss, filter F."""
        with torch.no_grad():
            out_weak = self.forward_train(self.to_device(batch_u, "img_weak"))
        mask, pseudo = self.unlabeled_mask(out_x, out_weak, batch_u, key)
        out_strong = self.forward_train(self.to_device(batch_u, "img_strong"))
        return ssl.fixmatch_loss(out_strong[key], pseudo, mask)

    def unlabeled_mask(self, out_x, out_weak, batch_u, key="logits"):
        """Filter F: keep confident weak-view predictions whose ID score passes."""
        scale = self.logit_scale_value()
        self.ssl_filter.update(self.id_scores(out_x, scale).detach())
        probs = out_weak[key].float().softmax(dim=-1)
        pseudo, confidence, _ = ssl.hard_pseudo_labels(probs, self.cfg.TRAINER.SSL.CONF_THRESH)
        mask = self.ssl_filter(confidence, self.id_scores(out_weak, scale))
        self.ssl_stats.update(mask, pseudo, batch_u["label"].to(mask.device), self.num_classes)
        return mask.float(), pseudo

    def id_scores(self, out, scale):
        local = out.get("local_logits")
        return ssl.id_score(
            self.cfg.TRAINER.SSL.SCORE,
            out["logits"].float() / scale,
            None if local is None else local.float() / scale,
        )

    def logit_scale_value(self):
        return self.clip_model.logit_scale.exp().item()

    def forward_train(self, images):
        raise NotImplementedError

    def forward_eval(self, images):
        return self.forward_train(images)

    # ---------------------------------------------------------------- testing
    def predict(self, images):
        """(probabilities over the K classes [B, K], ID score [B]); default MSP."""
        probs = self.forward_eval(images)["logits"].float().softmax(dim=-1)
        return probs, probs.max(dim=-1).values

    def model_inference(self, images):
        return self.predict(images)[0]

    @torch.no_grad()
    def reference_scores(self):
        """ID scores of the labeled training images (test transform), for the threshold."""
        loader = self.dm.make_loader(self.dm.dataset.train_x, views="test")
        scores = []
        for batch in loader:
            with self.autocast():
                scores.append(self.predict(self.to_device(batch))[1].float().cpu())
        return torch.cat(scores)

    @torch.no_grad()
    def test(self, split=None):
        self.set_model_mode("eval")
        self.evaluator.reset()
        split = split or self.cfg.TEST.SPLIT
        loader = self.val_loader if split == "val" and self.val_loader is not None else self.test_loader
        open_set = self.task == "ossl"
        if open_set:
            self.evaluator.set_reference_scores(self.reference_scores())
        start = time.time()
        for batch in loader:
            with self.autocast():
                probs, scores = self.predict(self.to_device(batch))
            labels = batch["label"]
            if open_set:
                self.evaluator.process(probs.float().cpu(), labels, scores.float().cpu())
            else:
                self.evaluator.process(probs.float().cpu(), labels)
        results = self.evaluator.evaluate()
        print(f"=> evaluated {len(loader.dataset)} images in {time.time() - start:.1f}s")
        for name, value in results.items():
            self.write_scalar(f"{split}/{name}", value, self.epoch if hasattr(self, "epoch") else 0)
        return list(results.values())[0]
