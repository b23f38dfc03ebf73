"""Trainer loops with Dassl's interface: TrainerBase, SimpleTrainer, TrainerX, TrainerXU.

Differences from Dassl, all for reproducibility: every epoch starts by reseeding the
global RNGs and the DataManager's loaders from (seed, epoch), and checkpoints also carry
the RNG state and `trainer_state()` (seed, best val result; subclasses add theirs), so a
run killed after epoch k and resumed ends with the same weights and metrics as an
uninterrupted run. As Dassl, training writes TensorBoard event files to
OUTPUT_DIR/tensorboard (`write_scalar`: the losses, the learning rate, each evaluation).

Distributed (torchrun, `leclip.distributed`): rank 0 alone reads and writes checkpoints;
what it reads reaches the other ranks through the process group. A trainer declares that
it synchronises its steps with `supports_distributed` (LE-CLIP's trainers do); any other
refuses WORLD_SIZE > 1, since its gradients would not be averaged.
"""
import datetime
import os.path as osp
import time
from collections import OrderedDict

import numpy as np
import torch

from leclip import distributed
from leclip.data import DataManager
from leclip.data.seeding import epoch_seed, fresh_seed

from .checkpoint import (
    BEST,
    CheckpointError,
    epoch_files,
    epoch_of,
    latest_checkpoint,
    load_checkpoint,
    load_state,
    restore,
    save_checkpoint,
)
from .config import check_cfg_values
from .datasets import build_dataset
from .evaluation import build_evaluator
from .registry import Registry
from .utils import AverageMeter, MetricMeter, get_rng_state, set_random_seed, set_rng_state

TRAINER_REGISTRY = Registry("TRAINER")


def build_trainer(cfg):
    names = TRAINER_REGISTRY.registered_names()
    if cfg.TRAINER.NAME not in names:
        raise KeyError(f"Unknown trainer {cfg.TRAINER.NAME!r} (TRAINER.NAME); registered: {', '.join(sorted(names))}")
    if cfg.VERBOSE:
        print(f"Loading trainer: {cfg.TRAINER.NAME}")
    return TRAINER_REGISTRY.get(cfg.TRAINER.NAME)(cfg)


class TrainerBase:
    """Registered models (each with its optimizer and scheduler), checkpoints, the
    generic epoch loop and the backward/update helpers."""

    def __init__(self):
        self._models = OrderedDict()
        self._optims = OrderedDict()
        self._scheds = OrderedDict()
        self._writer = None

    def register_model(self, name="model", model=None, optim=None, sched=None):
        if self.__dict__.get("_models") is None:
            raise AttributeError("Cannot register a model before super().__init__() is called")
        if name in self._models:
            raise KeyError(f"Model {name!r} is already registered (registered: {list(self._models)})")
        self._models[name] = model
        self._optims[name] = optim
        self._scheds[name] = sched

    def get_model_names(self, names=None):
        names_real = list(self._models)
        if names is None:
            return names_real
        names = [names] if isinstance(names, str) else list(names)
        for name in names:
            if name not in names_real:
                raise KeyError(f"Unknown model {name!r}; registered: {names_real}")
        return names

    # ---------------------------------------------------------------- checkpoints
    def trainer_state(self):
        """Saved with every checkpoint, given back to `load_trainer_state` on resume."""
        return {"rng": get_rng_state()}

    def load_trainer_state(self, state):
        set_rng_state(state["rng"])

    def save_model(self, epoch, directory, is_best=False, val_result=None, model_name=""):
        if not distributed.is_main():  # every rank holds the same state: rank 0 writes it
            return
        trainer_state = self.trainer_state()
        for name in self.get_model_names():
            optim, sched = self._optims[name], self._scheds[name]
            save_checkpoint(
                {
                    "state_dict": self._models[name].state_dict(),
                    "epoch": epoch + 1,
                    "optimizer": optim.state_dict() if optim is not None else None,
                    "scheduler": sched.state_dict() if sched is not None else None,
                    "val_result": None if val_result is None else float(val_result),
                    "trainer_state": trainer_state,
                },
                osp.join(directory, name),
                is_best=is_best,
                model_name=model_name,
            )

    def resume_model_if_exist(self, directory):
        """Load the latest checkpoint of every model from `directory`; returns the epoch
        to start from (0 when some model has none). A run killed between saving two
        models' checkpoints resumes from the epoch that every model has. Rank 0 reads the
        files; every rank loads what it read."""
        checkpoints = distributed.on_main(lambda: self.read_resume_checkpoints(directory))
        if checkpoints is None:
            return 0
        for name, (path, checkpoint) in checkpoints.items():
            restore(checkpoint, self._models[name], self._optims[name], self._scheds[name], source=path)
            print(f"Previous epoch: {checkpoint['epoch']}")
        if checkpoint.get("trainer_state") is not None:
            self.load_trainer_state(checkpoint["trainer_state"])
        return checkpoint["epoch"]

    def read_resume_checkpoints(self, directory):
        """{model: (path, checkpoint)} to resume from, or None (see resume_model_if_exist)."""
        names = self.get_model_names()
        if not names or any(latest_checkpoint(osp.join(directory, name)) is None for name in names):
            print("No checkpoint found, train from scratch")
            return None
        print(f"Found checkpoint at {directory} (will resume training)")
        paths = {name: latest_checkpoint(osp.join(directory, name)) for name in names}
        epochs = {name: epoch_of(path) for name, path in paths.items()}
        if len(set(epochs.values())) > 1:
            common = min(epochs.values())
            for name in names:
                paths[name] = epoch_files(osp.join(directory, name)).get(common)
            if any(path is None for path in paths.values()):
                raise CheckpointError(
                    f"The checkpoints in {directory} stop at different epochs {epochs} and not every model has "
                    f"model.pth.tar-{common}: delete {directory} to start the run again"
                )
            print(f"The models' checkpoints stop at different epochs {epochs}: resuming from epoch {common}")
        found = {}
        for name in names:
            print(f'Loading checkpoint from "{paths[name]}"')
            found[name] = (paths[name], load_checkpoint(paths[name]))
        return found

    def load_model(self, directory, epoch=None):
        """Load model-best.pth.tar (or model.pth.tar-<epoch>) of every model."""
        if not directory:
            print("Note that load_model() is skipped as no pretrained model is given")
            return
        model_file = BEST if epoch is None else f"model.pth.tar-{epoch}"

        def read():
            found = {}
            for name in self.get_model_names():
                model_path = osp.join(directory, name, model_file)
                if not osp.exists(model_path):
                    raise FileNotFoundError(f"No model at {model_path} (check --model-dir and --load-epoch)")
                found[name] = (model_path, load_checkpoint(model_path))
            return found

        for name, (model_path, checkpoint) in distributed.on_main(read).items():  # rank 0 reads
            val_result = checkpoint.get("val_result")
            shown = "" if val_result is None else f", val_result={val_result:.1f}"
            print(f"Load {model_path} to {name} (epoch={checkpoint['epoch']}{shown})")
            load_state(self._models[name], checkpoint["state_dict"], "model", model_path)

    # ---------------------------------------------------------------- models
    def set_model_mode(self, mode="train", names=None):
        if mode not in ("train", "test", "eval"):
            raise ValueError(f"set_model_mode({mode!r}): use 'train', 'test' or 'eval'")
        for name in self.get_model_names(names):
            self._models[name].train(mode == "train")

    def get_current_lr(self, names=None):
        """LR of the first param group of the first model that has an optimizer (0 if none)."""
        for name in self.get_model_names(names):
            if self._optims[name] is not None:
                return self._optims[name].param_groups[0]["lr"]
        return 0.0

    def update_lr(self, names=None):
        for name in self.get_model_names(names):
            if self._scheds[name] is not None:
                self._scheds[name].step()

    def detect_anomaly(self, loss):
        if not torch.isfinite(loss).all():
            raise FloatingPointError("Loss is infinite or NaN!")

    def init_writer(self, log_dir):
        if self._writer is None and distributed.is_main():  # one set of event files, from rank 0
            from torch.utils.tensorboard import SummaryWriter  # only a training run needs it

            print(f"Initialize tensorboard (log_dir={log_dir})")
            self._writer = SummaryWriter(log_dir=log_dir)

    def close_writer(self):
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def write_scalar(self, tag, scalar_value, global_step=None):
        if self._writer is not None:
            self._writer.add_scalar(tag, scalar_value, global_step)

    # ---------------------------------------------------------------- loop
    def train(self, start_epoch, max_epoch):
        self.start_epoch = start_epoch
        self.max_epoch = max_epoch
        self.before_train()
        for self.epoch in range(self.start_epoch, self.max_epoch):
            self.before_epoch()
            self.run_epoch()
            self.after_epoch()
        self.after_train()

    def before_train(self):
        pass

    def after_train(self):
        pass

    def before_epoch(self):
        pass

    def after_epoch(self):
        pass

    def run_epoch(self):
        raise NotImplementedError

    def test(self):
        raise NotImplementedError

    def parse_batch_train(self, batch):
        raise NotImplementedError

    def parse_batch_test(self, batch):
        raise NotImplementedError

    def forward_backward(self, batch):
        raise NotImplementedError

    def model_inference(self, input):
        raise NotImplementedError

    def model_zero_grad(self, names=None):
        for name in self.get_model_names(names):
            if self._optims[name] is not None:
                self._optims[name].zero_grad()

    def model_backward(self, loss):
        self.detect_anomaly(loss)
        loss.backward()

    def model_update(self, names=None):
        for name in self.get_model_names(names):
            if self._optims[name] is not None:
                self._optims[name].step()

    def model_backward_and_update(self, loss, names=None):
        self.model_zero_grad(names)
        self.model_backward(loss)
        self.model_update(names)


class SimpleTrainer(TrainerBase):
    """Builds data, model and evaluator from the cfg; trains, checkpoints and tests."""

    # whether the trainer averages its gradients over the ranks of a distributed run
    supports_distributed = False

    def __init__(self, cfg):
        super().__init__()
        if distributed.is_distributed() and not self.supports_distributed:
            raise distributed.DistributedError(
                f"{type(self).__name__} does not synchronise its training steps across processes: run it in one "
                "process (without torchrun / GPUS)"
            )
        check_cfg_values(cfg)
        self.check_cfg(cfg)
        self.device = distributed.device(cfg.USE_CUDA)  # cuda:LOCAL_RANK in a distributed CUDA run
        self.start_epoch = self.epoch = 0
        self.max_epoch = cfg.OPTIM.MAX_EPOCH
        self.output_dir = cfg.OUTPUT_DIR
        self.cfg = cfg
        # base of every epoch's seeds; SEED < 0 draws one, kept in the checkpoints
        self.seed = cfg.SEED if cfg.SEED >= 0 else distributed.broadcast_object(fresh_seed())
        # the model's initialisation too depends on the seed only, whoever calls
        set_random_seed(self.seed)
        self.build_data_loader()
        self.build_model()
        self.evaluator = build_evaluator(cfg, lab2cname=self.lab2cname)
        self.best_result = -np.inf

    def check_cfg(self, cfg):
        """Check the cfg for this trainer (optional)."""

    def build_data_loader(self):
        # rank 0 prepares the data files (rendering, split caches) before the others read them
        DataManager(self.cfg, distributed.in_turn(lambda: build_dataset(self.cfg))).attach(self)

    def build_model(self):
        raise NotImplementedError(
            f"{type(self).__name__}.build_model(): the built-in engine has no backbone zoo; "
            "build the model and register_model() it"
        )

    def trainer_state(self):
        state = super().trainer_state()
        state.update(seed=self.seed, best_result=self.best_result)
        return state

    def load_trainer_state(self, state):
        super().load_trainer_state(state)
        if self.cfg.SEED < 0:  # a fixed SEED stays the user's choice
            self.seed = state.get("seed", self.seed)
        self.best_result = state.get("best_result", self.best_result)

    def train(self):
        super().train(self.start_epoch, self.max_epoch)

    def before_train(self):
        directory = self.cfg.RESUME or self.cfg.OUTPUT_DIR
        self.start_epoch = self.resume_model_if_exist(directory)
        self.init_writer(osp.join(self.output_dir, "tensorboard"))
        self.time_start = time.time()

    def after_train(self):
        print("Finish training")
        if not self.cfg.TEST.NO_TEST:
            if self.cfg.TEST.FINAL_MODEL == "best_val":
                print("Deploy the model with the best val performance")
                self.load_model(self.output_dir)
            else:
                print("Deploy the last-epoch model")
            self.test()
        elapsed = str(datetime.timedelta(seconds=round(time.time() - self.time_start)))
        print(f"Elapsed: {elapsed}")
        self.close_writer()

    def before_epoch(self):
        # an epoch's randomness depends on (seed, epoch) only: exact resume
        set_random_seed(epoch_seed(self.seed, self.epoch))
        dm = getattr(self, "dm", None)
        if dm is not None:
            dm.set_epoch(self.epoch, self.seed)

    def after_epoch(self):
        last_epoch = (self.epoch + 1) == self.max_epoch
        freq = self.cfg.TRAIN.CHECKPOINT_FREQ
        meet_checkpoint_freq = freq > 0 and (self.epoch + 1) % freq == 0
        if not self.cfg.TEST.NO_TEST and self.cfg.TEST.FINAL_MODEL == "best_val":
            curr_result = self.test(split="val")
            if curr_result > self.best_result:
                self.best_result = curr_result
                self.save_model(self.epoch, self.output_dir, val_result=curr_result, model_name=BEST)
        if meet_checkpoint_freq or last_epoch:
            self.save_model(self.epoch, self.output_dir)

    @torch.no_grad()
    def test(self, split=None):
        """Evaluate on `split` (default TEST.SPLIT; val falls back to test when there is
        no val set). Returns the first metric; all of them stay in `self.test_results`."""
        self.set_model_mode("eval")
        self.evaluator.reset()
        split = split or self.cfg.TEST.SPLIT
        if split == "val" and self.val_loader is not None:
            data_loader = self.val_loader
        else:
            split = "test"
            data_loader = self.test_loader
        print(f"Evaluate on the *{split}* set")
        for batch in data_loader:
            input, label = self.parse_batch_test(batch)
            self.evaluator.process(self.model_inference(input), label)
        results = self.evaluator.evaluate()
        for name, value in results.items():
            self.write_scalar(f"{split}/{name}", value, self.epoch)
        self.test_results = results
        return list(results.values())[0]

    def model_inference(self, input):
        return self.model(input)

    def parse_batch_test(self, batch):
        return batch["img"].to(self.device), batch["label"].to(self.device)

    def log_progress(self, losses, batch_time, data_time):
        """Dassl's progress line every TRAIN.PRINT_FREQ batches (every batch when an
        epoch is shorter than that), and the scalars."""
        freq = self.cfg.TRAIN.PRINT_FREQ
        meet_freq = freq > 0 and (self.batch_idx + 1) % freq == 0
        if meet_freq or self.num_batches < freq:
            remaining = self.num_batches - self.batch_idx - 1 + (self.max_epoch - self.epoch - 1) * self.num_batches
            eta = str(datetime.timedelta(seconds=int(batch_time.avg * remaining)))
            print(
                f"epoch [{self.epoch + 1}/{self.max_epoch}] "
                f"batch [{self.batch_idx + 1}/{self.num_batches}] "
                f"time {batch_time.val:.3f} ({batch_time.avg:.3f}) "
                f"data {data_time.val:.3f} ({data_time.avg:.3f}) "
                f"{losses} "
                f"lr {self.get_current_lr():.4e} "
                f"eta {eta}"
            )
        n_iter = self.epoch * self.num_batches + self.batch_idx
        for name, meter in losses.meters.items():
            self.write_scalar("train/" + name, meter.avg, n_iter)
        self.write_scalar("train/lr", self.get_current_lr(), n_iter)

    def require_loader(self, loader, split):
        if loader is None:
            raise ValueError(
                f"{type(self).__name__} trains on {split}, but dataset {self.cfg.DATASET.NAME!r} has no {split} "
                "in this setting"
            )
        return loader


class TrainerX(SimpleTrainer):
    """Trains on labeled data only: `forward_backward(batch)` per batch of train_x."""

    def run_epoch(self):
        self.set_model_mode("train")
        losses, batch_time, data_time = MetricMeter(), AverageMeter(), AverageMeter()
        loader = self.require_loader(self.train_loader_x, "train_x")
        self.num_batches = len(loader)
        end = time.time()
        for self.batch_idx, batch in enumerate(loader):
            data_time.update(time.time() - end)
            loss_summary = self.forward_backward(batch)
            batch_time.update(time.time() - end)
            losses.update(loss_summary)
            self.log_progress(losses, batch_time, data_time)
            end = time.time()

    def parse_batch_train(self, batch):
        return batch["img"].to(self.device), batch["label"].to(self.device), batch["domain"].to(self.device)


class TrainerXU(SimpleTrainer):
    """Trains on labeled and unlabeled data: `forward_backward(batch_x, batch_u)`.

    TRAIN.COUNT_ITER sets the epoch length (train_x, train_u or smaller_one); the
    shorter loader restarts when it runs out.
    """

    def run_epoch(self):
        self.set_model_mode("train")
        losses, batch_time, data_time = MetricMeter(), AverageMeter(), AverageMeter()
        loader_x = self.require_loader(self.train_loader_x, "train_x")
        loader_u = self.require_loader(self.train_loader_u, "train_u")
        count_iter = self.cfg.TRAIN.COUNT_ITER
        lengths = {"train_x": len(loader_x), "train_u": len(loader_u)}
        lengths["smaller_one"] = min(lengths.values())
        self.num_batches = lengths[count_iter]
        iter_x, iter_u = iter(loader_x), iter(loader_u)
        end = time.time()
        for self.batch_idx in range(self.num_batches):
            try:
                batch_x = next(iter_x)
            except StopIteration:
                iter_x = iter(loader_x)
                batch_x = next(iter_x)
            try:
                batch_u = next(iter_u)
            except StopIteration:
                iter_u = iter(loader_u)
                batch_u = next(iter_u)
            data_time.update(time.time() - end)
            loss_summary = self.forward_backward(batch_x, batch_u)
            batch_time.update(time.time() - end)
            losses.update(loss_summary)
            self.log_progress(losses, batch_time, data_time)
            end = time.time()

    def parse_batch_train(self, batch_x, batch_u):
        return (
            batch_x["img"].to(self.device),
            batch_x["label"].to(self.device),
            batch_u["img"].to(self.device),
        )
