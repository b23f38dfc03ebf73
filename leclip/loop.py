"""`TrainingLoop`: the one epoch loop and training step of LE-CLIP's trainers, on either
engine (a part of `CLIPTrainer`, leclip/trainer_base.py, which documents the API).

An epoch iterates `epoch_loaders(epoch)`: train_x, train_u or both (then
TRAIN.COUNT_ITER batches, the shorter loader restarting), in the order of Dassl's loops
(each loader's iterator made before the first batch is read), so the batches and the
random augmentations are Dassl's. Each step: `compute_loss(batch_x, batch_u)` under
autocast (through DDP in a distributed run), the losses summed, backward and update
(through `self.scaler` under AMP), the LR scheduler stepped after the epoch's last batch.
The log line is Dassl's, with an ETA over the rest of the run: this epoch's remaining
batches and every later epoch's own count (an epoch that reads more loaders is longer).
"""
import datetime
import time

from .dassl import AverageMeter, MetricMeter


class TrainingLoop:
    def epoch_loaders(self, epoch):
        """(loader_x or None, loader_u or None) that epoch `epoch` iterates."""
        loader_u = self.train_loader_u if self.unlabeled.reads_unlabeled(epoch) else None
        return self.train_loader_x, loader_u

    def epoch_length(self, epoch):
        """Batches of epoch `epoch`: TRAIN.COUNT_ITER with two loaders, else its loader's."""
        lengths = {name: len(loader) for name, loader in zip(("train_x", "train_u"), self.epoch_loaders(epoch))
                   if loader is not None}
        if len(lengths) < 2:
            return sum(lengths.values())
        lengths["smaller_one"] = min(lengths.values())
        return lengths[self.cfg.TRAIN.COUNT_ITER]

    def run_epoch(self):
        self.set_model_mode("train")
        loaders = self.epoch_loaders(self.epoch)
        if not any(loader is not None for loader in loaders):
            raise ValueError(f"{type(self).__name__} has no training data in {self.cfg.DATASET.NAME}'s setting")
        self.num_batches = self.epoch_length(self.epoch)
        losses, batch_time, data_time = MetricMeter(), AverageMeter(), AverageMeter()
        # each loader's iterator is made before the first batch is read (the RNG order of
        # Dassl's loops); the shorter loader restarts when it runs out
        iterators = [None if loader is None else iter(loader) for loader in loaders]
        end = time.time()
        for self.batch_idx in range(self.num_batches):
            batches = []
            for i, loader in enumerate(loaders):
                if loader is None:
                    batches.append(None)
                    continue
                try:
                    batches.append(next(iterators[i]))
                except StopIteration:
                    iterators[i] = iter(loader)
                    batches.append(next(iterators[i]))
            data_time.update(time.time() - end)
            summary = self.forward_backward(*batches)
            batch_time.update(time.time() - end)
            losses.update(summary)
            self.log_step(losses, batch_time, data_time)
            end = time.time()

    def remaining_batches(self):
        """Batches left in the run after this one: the rest of this epoch and every later
        epoch's own count (an epoch may read more loaders than this one, e.g. CSA's)."""
        later = sum(self.epoch_length(epoch) for epoch in range(self.epoch + 1, self.max_epoch))
        return self.num_batches - self.batch_idx - 1 + later

    def log_step(self, losses, batch_time, data_time):
        """Dassl's progress line every TRAIN.PRINT_FREQ batches (every batch when an epoch is
        shorter than that), with the run's ETA, and the TensorBoard scalars."""
        freq = self.cfg.TRAIN.PRINT_FREQ
        if (freq > 0 and (self.batch_idx + 1) % freq == 0) or self.num_batches < freq:
            eta = datetime.timedelta(seconds=int(batch_time.avg * self.remaining_batches()))
            print(
                f"epoch [{self.epoch + 1}/{self.max_epoch}] batch [{self.batch_idx + 1}/{self.num_batches}] "
                f"time {batch_time.val:.3f} ({batch_time.avg:.3f}) data {data_time.val:.3f} ({data_time.avg:.3f}) "
                f"{losses} lr {self.get_current_lr():.4e} eta {eta}"
            )
        n_iter = self.epoch * self.num_batches + self.batch_idx
        for name, meter in losses.meters.items():
            self.write_scalar("train/" + name, meter.avg, n_iter)
        self.write_scalar("train/lr", self.get_current_lr(), n_iter)

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
