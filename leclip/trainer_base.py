"""`CLIPTrainer`: the base class of every LE-CLIP trainer, and its one training loop.

A method is a small subclass (as in USB): `build_model` loads CLIP and builds
`self.model`, whose `encode_classes()` returns what the method derives from its class
names (text features, prompt features, deep prompts: anything image-independent) and
whose `forward(images, classes)` returns the outputs. This class owns what every method
shares, on either engine (Dassl.pytorch or `leclip.engine`):

- data: LE-CLIP's DataManager (named views, multi-hot labels, hidden OOD labels);
- device and precision: CUDA when available, AMP there (`TRAINER.PREC`; `self.scaler` is
  set here, never by a method), fp32 on CPU;
- the one epoch loop (`run_epoch`) and step (`forward_backward`), in `leclip.loop`;
- the unlabeled-data strategy, a component (`leclip.ssl.Unlabeled`) chosen by config;
- every pass over a dataset (`score_pass`) and testing with the evaluator of the
  dataset's task: open-set (closed accuracy, balanced accuracy with the labeled-quantile
  threshold, AUROC) or multi-label;
- the trainer's state inside every epoch checkpoint, on both engines;
- distributed training (torchrun, `leclip.distributed`): the step's loss runs through
  DistributedDataParallel over the registered (learnable) modules, whose backward averages
  the gradients over the ranks; every pass is sharded and gathered.

The API a method uses (override only what it needs; call super() in the hooks):

- `compute_loss(batch_x, batch_u) -> {name: loss}`: one step's losses, summed by the
  base (which runs them under autocast, through DDP, and logs each). `batch_x` is None in
  an epoch without labeled data, `batch_u` None in one without unlabeled data. The base's
  version: supervised loss on batch_x, plus the strategy's `losses(out_x, batch_u, classes)`.
- `epoch_loaders(epoch) -> (loader_x or None, loader_u or None)`: what an epoch iterates
  (default: train_x, plus train_u when the strategy reads it that epoch). With both, the
  epoch has TRAIN.COUNT_ITER batches and the shorter loader restarts. A pure function of
  the epoch: the ETA counts every remaining epoch's batches.
- `before_epoch()` / `after_epoch()`: around an epoch's loop; before_epoch runs after the
  epoch's reseeding, after_epoch before the epoch's checkpoint (so what it computes, e.g.
  a selection, is saved with it).
- `build_unlabeled() -> leclip.ssl.Unlabeled`: the strategy (default from
  TRAINER.SSL.MODE: `ssl.STRATEGIES`); a method with its own returns it (its `state()` /
  `load_state()` go into the checkpoints).
- `trainer_state() -> dict` / `load_trainer_state(dict)`: what else the method must carry
  through a resume (call super()); saved inside every epoch checkpoint, on both engines.
- `score_pass(loader, fn, desc)`: `fn(batch)` on every batch (tensors already on the
  device) in eval mode, under no_grad and autocast, with progress; returns fn's outputs
  (a tensor or a tuple of tensors) concatenated over the batches and gathered over the
  ranks, on the CPU (floating ones as float32). For every pass over a dataset.
- `predict(images, classes)`, `forward_train/labeled/unlabeled/eval`, `encode_classes`,
  the FixMatch groups (`fixmatch_heads`, `output_groups`, `unlabeled_weights`) and
  `supervised_losses`: the method's model and losses.

Outputs are dicts with at least `logits` ([B, K], already multiplied by the logit
scale); `local_logits` ([B, N, K]) enables the GL-MCM score.
"""
import os
import time

import torch
import torch.nn.functional as F

from . import config, distributed, evaluators, ssl
from .backbone import autocast, check_input_size, load_clip, resolve_logit_scale
from .data import DataManager
from .data.seeding import epoch_seed
from .dassl import ENGINE, TrainerXU, build_dataset, build_lr_scheduler, build_optimizer, set_random_seed
from .engine.checkpoint import epoch_files
from .loop import TrainingLoop
from .progress import progress
from .tasks import describe, task_of

config.add_defaults(
    {
        # (ours) False keeps an epoch's checkpoint only until the next one is saved: the
        # last and the selected ones (model-best, CCD's selected epoch) stay; True keeps all
        "TRAIN.KEEP_EVERY_CHECKPOINT": False,
    }
)


class MethodState:
    """The root of the `trainer_state` chain where the engine has none (Dassl)."""

    def trainer_state(self):
        return {}

    def load_trainer_state(self, state):
        pass


class CLIPTrainer(TrainingLoop, TrainerXU, MethodState):
    # Trainers with nothing to learn (zero-shot) set this to False.
    learns = True
    # the tasks this method serves (leclip/tasks.py: A, B, C)
    tasks = ("A",)
    supports_distributed = True

    def __init__(self, cfg):
        super().__init__(cfg)
        self.scaler = torch.amp.GradScaler("cuda") if self.use_amp and self.learns else None

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
        # the engine then builds the evaluator of the task (one evaluator, one log line)
        evaluators.name_in_cfg(self.task, self.cfg)

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

    # ---------------------------------------------------------------- unlabeled data
    def build_unlabeled(self):
        """The unlabeled-data strategy (`leclip.ssl.Unlabeled`) of TRAINER.SSL.MODE."""
        return ssl.STRATEGIES[self.cfg.TRAINER.SSL.MODE](self)

    def fixmatch_heads(self):
        """{group: {head: logits key}} of the FixMatch step (one filter per group)."""
        return {"main": {"global": "logits"}}

    def output_groups(self, out):
        """The FixMatch groups of a forward's outputs."""
        return {"main": out}

    def unlabeled_weights(self):
        """Weight of each group's unlabeled loss (times TRAINER.SSL.LAMBDA)."""
        return {"main": 1.0}

    # ---------------------------------------------------------------- state and checkpoints
    def trainer_state(self):
        """Saved inside every epoch checkpoint, on both engines: the engine's part (built-in:
        RNG, seed, best result), the unlabeled strategy's state, and what a method adds."""
        return {**super().trainer_state(), "unlabeled": self.unlabeled.state()}

    def load_trainer_state(self, state):
        super().load_trainer_state(state)
        self.unlabeled.load_state(state["unlabeled"])

    def save_model(self, epoch, directory, is_best=False, val_result=None, model_name=""):
        if ENGINE == "dassl":  # Dassl's save_model does not carry trainer_state()
            from . import dassl_compat

            dassl_compat.save_with_trainer_state(self, super().save_model, epoch, directory, is_best, val_result,
                                                 model_name)
        else:
            super().save_model(epoch, directory, is_best, val_result, model_name)
        if not model_name and not self.cfg.TRAIN.KEEP_EVERY_CHECKPOINT and distributed.is_main():
            self.drop_earlier_checkpoints(epoch + 1, directory)

    def drop_earlier_checkpoints(self, kept, directory):
        """Remove model.pth.tar-<k> for k < `kept` (TRAIN.KEEP_EVERY_CHECKPOINT False);
        differently named ones (model-best, a method's selected epoch) stay."""
        for name in self.get_model_names():
            for number, path in epoch_files(os.path.join(directory, name)).items():
                if number < kept:
                    os.remove(path)

    def resume_model_if_exist(self, directory):
        if ENGINE == "dassl":  # Dassl's resume does not give trainer_state() back
            from . import dassl_compat

            return dassl_compat.resume_with_trainer_state(self, super().resume_model_if_exist, directory)
        return super().resume_model_if_exist(directory)

    # ---------------------------------------------------------------- the loop
    def train(self):
        if self.learns:
            super().train()
            return
        # nothing to learn: no resume, no "training" lines, just the evaluation
        print(f"{type(self).__name__} learns nothing: evaluating")
        self.test()

    def before_train(self):
        self.unlabeled = self.build_unlabeled()
        super().before_train()  # resumes the registered models and the trainer state
        # after the resume and after every registration (CCD registers a model in before_train)
        self.ddp_step = distributed.data_parallel_step(self._models, self.compute_loss)

    def before_epoch(self):
        super().before_epoch()
        if ENGINE == "dassl":  # Dassl does not reseed per epoch; the built-in engine does
            seed = max(self.cfg.SEED, 0)
            set_random_seed(epoch_seed(seed, self.epoch))
            self.dm.set_epoch(self.epoch, seed)
        self.unlabeled.before_epoch()

    def after_epoch(self):
        self.unlabeled.after_epoch()
        super().after_epoch()  # validation and the epoch's checkpoint

    def to_device(self, batch, key="img"):
        return batch[key].to(self.device)

    def compute_loss(self, batch_x, batch_u):
        """Supervised loss on the labeled batch, plus the unlabeled strategy's terms; the
        class side is encoded once for every view of the step."""
        classes = self.encode_classes()
        images, labels = self.to_device(batch_x), self.to_device(batch_x, "label")
        out_x = self.forward_labeled(images, labels, classes)
        losses = self.supervised_losses(out_x, labels)
        if batch_u is not None:
            losses.update(self.unlabeled.losses(out_x, batch_u, classes))
        return losses

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

    # ---------------------------------------------------------------- passes and testing
    @torch.no_grad()
    def score_pass(self, loader, fn, desc):
        """fn(batch) over `loader` (the batch's tensors on the device) in eval mode, under
        autocast, with progress; fn's outputs (a tensor or a tuple of tensors) concatenated
        over the batches and gathered over the ranks, on the CPU, floating ones as float32.
        The models' train/eval modes are restored after."""
        modes = {name: model.training for name, model in self._models.items()}
        self.set_model_mode("eval")
        outputs, single = [], True
        for batch in progress(loader, desc):
            batch = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in batch.items()}
            with self.autocast():
                out = fn(batch)
            single = not isinstance(out, tuple)
            parts = (out,) if single else out
            outputs.append([p.float().cpu() if p.is_floating_point() else p.cpu() for p in parts])
        for name, training in modes.items():
            self._models[name].train(training)
        if not outputs:
            raise ValueError(f"{desc}: the loader has no batch ({self.cfg.DATASET.NAME}, this rank's shard)")
        gathered = tuple(distributed.gather_shards(torch.cat(part)) for part in zip(*outputs))
        return gathered[0] if single else gathered

    def predict(self, images, classes):
        """Single-label: (probabilities over the K classes [B, K], ID score [B]), default
        MSP. A method serving multi-label data returns (scores [B, C], positives [B, C])."""
        probs = self.forward_eval(images, classes)["logits"].float().softmax(dim=-1)
        return probs, probs.max(dim=-1).values

    def eval_outputs(self, images, classes):
        """One evaluation batch: predict's two outputs, then any per-image tensors a method
        reads from the same forward for its `evaluated` diagnostics (none by default)."""
        return self.predict(images, classes)

    def evaluated(self, split, labels, *extra):
        """After the evaluator's metrics of `split`: the method's own diagnostics from the
        extra outputs of `eval_outputs` (none by default)."""

    def model_inference(self, images):
        return self.predict(images, self.encode_classes())[0]

    def reference_scores(self, classes):
        """ID scores of the labeled training images (test transform), for the threshold."""
        loader = self.dm.make_loader(self.dm.dataset.train_x, views="test")
        return self.score_pass(loader, lambda batch: self.predict(batch["img"], classes)[1], "Scoring the labeled images")

    def split_loader(self, split):
        """The loader of evaluation split `split`: val when it exists, else test."""
        return self.val_loader if split == "val" and self.val_loader is not None else self.test_loader

    @torch.no_grad()
    def test(self, split=None):
        self.set_model_mode("eval")
        self.evaluator.reset()
        split = split or self.cfg.TEST.SPLIT
        loader = self.split_loader(split)
        with self.autocast():
            classes = self.encode_classes()  # once per evaluation
        open_set = self.task == "ossl"
        if open_set:
            self.evaluator.set_reference_scores(self.reference_scores(classes))
        start = time.time()
        def outputs(batch):
            probs, second, *extra = self.eval_outputs(batch["img"], classes)
            return probs, batch["label"], second, *extra

        probs, labels, second, *extra = self.score_pass(loader, outputs, f"Evaluating on {split}")
        if self.task in ("ossl", "multilabel"):  # ID scores / predicted positives
            self.evaluator.process(probs, labels, second)
        else:
            self.evaluator.process(probs, labels)
        results = self.evaluator.evaluate()
        print(f"=> evaluated {len(loader.dataset)} images in {time.time() - start:.1f}s")
        for name, value in results.items():
            self.write_scalar(f"{split}/{name}", value, self.epoch if hasattr(self, "epoch") else 0)
        self.evaluated(split, labels, *extra)
        return list(results.values())[0]
