"""`CLIPTrainer`: the base class of every LE-CLIP trainer.

A method is a small subclass (as in USB): `build_model` loads CLIP and builds
`self.model`, whose `encode_classes()` returns what the method derives from its class
names (text features, prompt features, deep prompts: anything image-independent) and
whose `forward(images, classes)` returns the outputs. This class owns what every method
shares, on either engine (Dassl.pytorch or `leclip.engine`):

- data: LE-CLIP's DataManager (named views, multi-hot labels, hidden OOD labels);
- device and precision: CUDA when available, AMP there (`TRAINER.PREC`), fp32 on CPU;
- the class side computed once per step (shared by every view) and once per evaluation;
- the semi-supervised recipe `TRAINER.SSL.MODE: none | fixmatch` (`ssl.FixMatchStep`:
  hard pseudo-labels from the weak view, loss on the strong view, filter F on
  confidence and ID score), with per-epoch diagnostics;
- testing with the evaluator of the dataset's task: open-set (closed accuracy,
  balanced accuracy with the labeled-quantile threshold, AUROC) or multi-label;
- distributed training (torchrun, `leclip.distributed`): the step's loss runs through
  DistributedDataParallel over the registered (learnable) modules, whose backward averages
  the gradients over the ranks; every evaluation pass is sharded and gathered.

Outputs are dicts with at least `logits` ([B, K], already multiplied by the logit
scale); `local_logits` ([B, N, K]) enables the GL-MCM score.
"""
import time

import torch
import torch.nn.functional as F

from . import config, distributed, evaluators, ssl
from .backbone import autocast, check_input_size, load_clip, resolve_logit_scale
from .data import DataManager
from .data.seeding import epoch_seed
from .dassl import ENGINE, TrainerX, TrainerXU, build_dataset, build_lr_scheduler, build_optimizer, set_random_seed
from .progress import progress
from .tasks import describe, task_of


class CLIPTrainer(TrainerXU):
    # Trainers with nothing to learn (zero-shot) set this to False.
    learns = True
    # the tasks this method serves (leclip/tasks.py: A, B, C)
    tasks = ("A",)
    supports_distributed = True

    def __init__(self, cfg):
        super().__init__(cfg)
        # the evaluator follows from the dataset's task, not from TEST.EVALUATOR
        self.evaluator = evaluators.for_task(self.task, cfg, self.lab2cname, self.evaluator)

    # ---------------------------------------------------------------- set-up
    def check_cfg(self, cfg):
        config.check_config(cfg)

    @property
    def uses_fixmatch(self):
        return self.cfg.TRAINER.SSL.MODE == "fixmatch"

    @property
    def use_unlabeled(self):
        """Whether training reads train_u (a method with its own pseudo-labels overrides it)."""
        return self.uses_fixmatch

    def build_data_loader(self):
        # rank 0 prepares the data files (rendering, split caches) before the others read them
        DataManager(self.cfg, distributed.in_turn(lambda: build_dataset(self.cfg))).attach(self)
        self.task = getattr(self.dm.dataset, "task", "closed")
        task = task_of(self.task, self.cfg.DATASET.SETTING)
        if task not in self.tasks:
            raise ValueError(
                f"{type(self).__name__} does not serve {self.cfg.DATASET.NAME}'s task ({describe(task)}); it serves "
                f"task {describe(self.tasks)} (see the README's method table)"
            )
        if self.uses_fixmatch and self.task == "multilabel":
            raise ValueError(
                "TRAINER.SSL.MODE fixmatch is single-label (hard pseudo-labels, softmax CE): use TRAINER.SSL.MODE none "
                "on multi-label data"
            )
        if not self.use_unlabeled:
            self.train_loader_u = None
        elif self.train_loader_u is None:
            raise ValueError(
                f"{type(self).__name__} trains on unlabeled data, but {self.cfg.DATASET.NAME} has no train_u in this "
                "setting" + ("; use TRAINER.SSL.MODE none" if self.uses_fixmatch else "")
            )

    @property
    def classnames(self):
        return self.dm.dataset.classnames

    def load_clip(self):
        """The frozen CLIP of MODEL.BACKBONE (on the CPU); sets `self.logit_scale`."""
        cfg = self.cfg
        model = load_clip(cfg.MODEL.BACKBONE.NAME, path=cfg.MODEL.BACKBONE.PATH, device="cpu")
        check_input_size(model, cfg.INPUT.SIZE, cfg.MODEL.BACKBONE.PATH or cfg.MODEL.BACKBONE.NAME)
        for p in model.parameters():
            p.requires_grad_(False)
        self.logit_scale = resolve_logit_scale(model, cfg.TRAINER.LOGIT_SCALE)
        return model

    @property
    def use_amp(self):
        return self.device.type == "cuda" and self.cfg.TRAINER.PREC in ("amp", "fp16")

    def autocast(self):
        return autocast(self.device, self.cfg.TRAINER.PREC)

    def setup_optimization(self, name, module):
        """Register `module` (its trainable parameters) with the cfg's optimizer."""
        params = [p for p in module.parameters() if p.requires_grad]
        self.optim = build_optimizer(params, self.cfg.OPTIM)
        self.sched = build_lr_scheduler(self.optim, self.cfg.OPTIM)
        self.register_model(name, module, self.optim, self.sched)
        self.scaler = torch.amp.GradScaler("cuda") if self.use_amp else None

    # ---------------------------------------------------------------- FixMatch
    def fixmatch_heads(self):
        """{group: {head: logits key}} of the FixMatch step (one filter per group)."""
        return {"main": {"global": "logits"}}

    def output_groups(self, out):
        """The FixMatch groups of a forward's outputs."""
        return {"main": out}

    def unlabeled_weights(self):
        """Weight of each group's unlabeled loss (times TRAINER.SSL.LAMBDA)."""
        return {"main": 1.0}

    def trainer_state(self):
        """The filter's running thresholds survive a resume (built-in engine)."""
        state = super().trainer_state()
        if self.uses_fixmatch:
            state["ssl_thresholds"] = self.fixmatch.state()
        return state

    def load_trainer_state(self, state):
        super().load_trainer_state(state)
        if self.uses_fixmatch:
            self.fixmatch.load_state(state["ssl_thresholds"])

    def before_epoch(self):
        super().before_epoch()
        if ENGINE == "dassl":  # Dassl does not reseed per epoch; the built-in engine does
            seed = max(self.cfg.SEED, 0)
            set_random_seed(epoch_seed(seed, self.epoch))
            self.dm.set_epoch(self.epoch, seed)

    def before_train(self):
        if self.uses_fixmatch:
            ssl_cfg = self.cfg.TRAINER.SSL
            self.fixmatch = ssl.FixMatchStep(
                self.fixmatch_heads(), ssl_cfg.CONF_THRESH, ssl_cfg.SCORE, ssl_cfg.OOD_QUANTILE, ssl_cfg.FILTER_LIFETIME
            )
        super().before_train()  # resumes the registered models
        # after the resume and after every registration (CCD registers a model in before_train)
        self.ddp_step = distributed.data_parallel_step(self._models, self.compute_loss)

    # ---------------------------------------------------------------- training
    def run_epoch(self):
        if self.train_loader_u is None:
            TrainerX.run_epoch(self)
            return
        self.fixmatch.start_epoch()
        TrainerXU.run_epoch(self)
        print(f"epoch [{self.epoch + 1}/{self.max_epoch}] unlabeled: {self.fixmatch.log_line()}")

    def step_losses(self, *batches):
        """compute_loss(*batches), through DDP in a distributed run (its backward then
        averages the gradients over the ranks: the gradient of the global batch's mean)."""
        step = getattr(self, "ddp_step", None)
        return self.compute_loss(*batches) if step is None else step(*batches)

    def forward_backward(self, batch_x, batch_u=None):
        with self.autocast():
            losses = self.step_losses(batch_x, batch_u)
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
        """Supervised loss on the labeled batch, plus FixMatch on the unlabeled one; the
        class side is encoded once for every view of the step."""
        classes = self.encode_classes()
        images, labels = self.to_device(batch_x), self.to_device(batch_x, "label")
        out_x = self.forward_labeled(images, labels, classes)
        losses = self.supervised_losses(out_x, labels)
        if batch_u is not None:
            weights = self.unlabeled_weights()
            for group, loss in self.fixmatch_losses(out_x, batch_u, classes).items():
                name = "loss_u" if group == "main" else f"loss_u_{group}"
                losses[name] = self.cfg.TRAINER.SSL.LAMBDA * weights[group] * loss
        return losses

    def fixmatch_losses(self, out_x, batch_u, classes):
        def forward(images, groups_weak):
            return self.output_groups(self.forward_unlabeled(images, classes, groups_weak))

        return self.fixmatch(
            self.output_groups(out_x),
            forward,
            self.to_device(batch_u, "img_weak"),
            self.to_device(batch_u, "img_strong"),
            self.logit_scale,
            batch_u["label"],
            self.num_classes,
        )

    def supervised_losses(self, out, labels):
        return {"loss_x": self.supervised_loss(out, labels)}

    def supervised_loss(self, out, labels):
        return F.cross_entropy(out["logits"], labels)

    def encode_classes(self):
        """The model's class side (text features, ...), computed once per step / evaluation."""
        return self.model.encode_classes()

    def forward_train(self, images, classes):
        return self.model(images, classes)

    def forward_labeled(self, images, labels, classes):
        """Outputs on labeled images (a method may use their labels, e.g. CFSG-CLIP's SFM)."""
        return self.forward_train(images, classes)

    def forward_unlabeled(self, images, classes, groups_weak):
        """Outputs on an unlabeled view; `groups_weak` is None for the weak view and its
        FixMatch groups for the strong view (CFSG-CLIP's SFM class comes from there)."""
        return self.forward_train(images, classes)

    def forward_eval(self, images, classes):
        return self.forward_train(images, classes)

    # ---------------------------------------------------------------- figures
    def visualize(self, folder):
        """train.py --viz, after the run: the method's diagnostic figures into `folder`
        (called on every rank; rank 0 draws). A method with figures overrides this."""
        print(f"--viz: trainer {type(self).__name__} has no visualisation (CCD and CSA have)")

    # ---------------------------------------------------------------- testing
    def predict(self, images, classes):
        """Single-label: (probabilities over the K classes [B, K], ID score [B]), default
        MSP. A method serving multi-label data returns (scores [B, C], positives [B, C])."""
        probs = self.forward_eval(images, classes)["logits"].float().softmax(dim=-1)
        return probs, probs.max(dim=-1).values

    def model_inference(self, images):
        return self.predict(images, self.encode_classes())[0]

    @torch.no_grad()
    def reference_scores(self, classes):
        """ID scores of the labeled training images (test transform), for the threshold."""
        loader = self.dm.make_loader(self.dm.dataset.train_x, views="test")
        scores = []
        for batch in progress(loader, "Scoring the labeled images"):
            with self.autocast():
                scores.append(self.predict(self.to_device(batch), classes)[1].float().cpu())
        return distributed.gather_shards(torch.cat(scores))

    @torch.no_grad()
    def test(self, split=None):
        self.set_model_mode("eval")
        self.evaluator.reset()
        split = split or self.cfg.TEST.SPLIT
        loader = self.val_loader if split == "val" and self.val_loader is not None else self.test_loader
        with self.autocast():
            classes = self.encode_classes()  # once per evaluation
        open_set = self.task == "ossl"
        if open_set:
            self.evaluator.set_reference_scores(self.reference_scores(classes))
        start = time.time()
        outputs = []  # (probabilities, labels, ID scores or positives) per batch of this rank's shard
        for batch in progress(loader, f"Evaluating on {split}"):
            with self.autocast():
                probs, second = self.predict(self.to_device(batch), classes)
            outputs.append((probs.float().cpu(), batch["label"], second.cpu()))
        probs, labels, second = (distributed.gather_shards(torch.cat(part)) for part in zip(*outputs))
        if open_set:
            self.evaluator.process(probs, labels, second.float())
        elif self.task == "multilabel":
            self.evaluator.process(probs, labels, second)
        else:
            self.evaluator.process(probs, labels)
        results = self.evaluator.evaluate()
        print(f"=> evaluated {len(loader.dataset)} images in {time.time() - start:.1f}s")
        for name, value in results.items():
            self.write_scalar(f"{split}/{name}", value, self.epoch if hasattr(self, "epoch") else 0)
        return list(results.values())[0]
