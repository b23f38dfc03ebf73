"""leclip/loop.py's epoch loop and step on a stand-in trainer whose every call is recorded
(what mutmut's survivors showed untested): the order in which loaders are iterated and
restarted, the batch count, the summed loss and its summary, the LR step after the last
batch only, the AMP path through the scaler, DDP's step, the log line and its scalars."""
import contextlib
from types import SimpleNamespace

import pytest
import torch

from leclip import loop
from leclip.dassl import get_cfg_default
from leclip.loop import TrainingLoop


class Loader:
    """A loader of named batches that records each iter() and next() in a shared log."""

    def __init__(self, name, n, log):
        self.name, self.n, self.log = name, n, log

    def __len__(self):
        return self.n

    def __iter__(self):
        self.log.append(("iter", self.name))
        return self.batches()

    def batches(self):
        for i in range(self.n):
            self.log.append(("next", self.name))
            yield f"{self.name}{i}"


class Loop(TrainingLoop):
    def __init__(self, n_x=2, n_u=5, reads=True, count_iter="train_u", print_freq=5, max_epoch=2):
        self.cfg = get_cfg_default()
        self.cfg.TRAIN.COUNT_ITER, self.cfg.TRAIN.PRINT_FREQ = count_iter, print_freq
        self.cfg.DATASET.NAME = "SomeData"
        self.log, self.calls, self.scalars = [], [], []
        self.train_loader_x = None if n_x is None else Loader("x", n_x, self.log)
        self.train_loader_u = None if n_u is None else Loader("u", n_u, self.log)
        self.unlabeled = SimpleNamespace(reads_unlabeled=lambda epoch: reads if isinstance(reads, bool) else reads(epoch))
        self.epoch, self.max_epoch, self.scaler, self.in_autocast = 0, max_epoch, None, False

    def set_model_mode(self, mode):
        self.calls.append(("mode", mode))

    @contextlib.contextmanager
    def autocast(self):
        self.in_autocast = True
        yield
        self.in_autocast = False

    def compute_loss(self, batch_x, batch_u):
        assert self.in_autocast
        self.calls.append(("step", batch_x, batch_u))
        step = len([c for c in self.calls if c[0] == "step"])
        return {"loss_a": torch.tensor(float(step), requires_grad=True), "loss_b": torch.tensor(2.0 * step)}

    def model_backward_and_update(self, loss):
        self.calls.append(("backward", loss.item()))

    def model_zero_grad(self):
        self.calls.append(("zero_grad",))

    def update_lr(self):
        self.calls.append(("update_lr", self.batch_idx))

    def get_current_lr(self):
        return 0.0123

    def write_scalar(self, name, value, step):
        self.scalars.append((name, round(value, 4), step))


@pytest.fixture
def clock(monkeypatch):
    """time.time advancing 0.5 s per call: data 0.5 s, step 1.0 s per batch."""
    now = iter(range(10_000))
    monkeypatch.setattr(loop.time, "time", lambda: 0.5 * next(now))


def test_an_epoch_makes_both_iterators_first_and_restarts_the_shorter_loader(clock):
    trainer = Loop(n_x=2, n_u=5)
    trainer.run_epoch()
    assert trainer.calls[0] == ("mode", "train")
    steps = [c[1:] for c in trainer.calls if c[0] == "step"]
    assert steps == [("x0", "u0"), ("x1", "u1"), ("x0", "u2"), ("x1", "u3"), ("x0", "u4")]
    assert trainer.log[:4] == [("iter", "x"), ("iter", "u"), ("next", "x"), ("next", "u")]
    assert trainer.log.count(("iter", "x")) == 3 and trainer.log.count(("iter", "u")) == 1
    assert trainer.num_batches == 5 and [c for c in trainer.calls if c[0] == "update_lr"] == [("update_lr", 4)]
    # each step's loss is the sum of its terms, backpropagated once
    assert [c[1] for c in trainer.calls if c[0] == "backward"] == [3.0, 6.0, 9.0, 12.0, 15.0]


@pytest.mark.parametrize("count_iter, expected", [("train_x", 2), ("train_u", 5), ("smaller_one", 2)])
def test_the_epoch_length_with_two_loaders_follows_count_iter(count_iter, expected):
    assert Loop(n_x=2, n_u=5, count_iter=count_iter).epoch_length(0) == expected
    assert Loop(n_x=6, n_u=3, count_iter=count_iter).epoch_length(0) == {"train_x": 6, "train_u": 3,
                                                                          "smaller_one": 3}[count_iter]


def test_an_epoch_without_unlabeled_reading_iterates_the_labeled_loader_alone(clock):
    trainer = Loop(n_x=3, n_u=7, reads=lambda epoch: epoch >= 1, count_iter="train_u")
    assert trainer.epoch_loaders(0) == (trainer.train_loader_x, None)
    assert trainer.epoch_loaders(1) == (trainer.train_loader_x, trainer.train_loader_u)
    assert trainer.epoch_length(0) == 3 and trainer.epoch_length(1) == 7
    trainer.run_epoch()
    assert [c[1:] for c in trainer.calls if c[0] == "step"] == [("x0", None), ("x1", None), ("x2", None)]
    assert ("iter", "u") not in trainer.log


def test_an_unlabeled_only_epoch_passes_no_labeled_batch(clock):
    trainer = Loop(n_x=None, n_u=2)
    trainer.run_epoch()
    assert [c[1:] for c in trainer.calls if c[0] == "step"] == [(None, "u0"), (None, "u1")]


def test_an_epoch_without_any_loader_is_one_message():
    trainer = Loop(n_x=None, n_u=4, reads=False)
    with pytest.raises(ValueError, match=r"^Loop has no training data in SomeData's setting$"):
        trainer.run_epoch()


def test_the_log_line_every_print_freq_batches_with_the_runs_eta(clock, capsys):
    trainer = Loop(n_x=4, n_u=None, print_freq=3, max_epoch=3)
    trainer.run_epoch()
    lines = capsys.readouterr().out.splitlines()
    # batch 3 of 4 only (4 is not a multiple of 3, and the epoch is not shorter than 3); 1 left + 2 epochs of 4
    assert lines == ["epoch [1/3] batch [3/4] time 1.000 (1.000) data 0.500 (0.500) loss_a 3.0000 (2.0000) "
                     "loss_b 6.0000 (4.0000) loss 9.0000 (6.0000) lr 1.2300e-02 eta 0:00:09"]


@pytest.mark.parametrize("n, freq, printed", [(3, 3, [3]), (3, 1, [1, 2, 3]), (2, 3, [1, 2])])
def test_which_batches_are_logged(clock, capsys, n, freq, printed):
    """An epoch as long as PRINT_FREQ logs its last batch only; PRINT_FREQ 1 logs every batch."""
    Loop(n_x=n, n_u=None, print_freq=freq, max_epoch=1).run_epoch()
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" time")[0] for line in lines] == [f"epoch [1/1] batch [{b}/{n}]" for b in printed]


def test_an_epoch_shorter_than_print_freq_logs_every_batch(clock, capsys):
    trainer = Loop(n_x=2, n_u=None, print_freq=3, max_epoch=1)
    trainer.run_epoch()
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" time")[0] for line in lines] == ["epoch [1/1] batch [1/2]", "epoch [1/1] batch [2/2]"]
    assert lines[1].endswith("eta 0:00:00")


def test_print_freq_zero_logs_nothing_but_the_scalars(clock, capsys):
    trainer = Loop(n_x=2, n_u=None, print_freq=0, max_epoch=1)
    trainer.run_epoch()
    assert capsys.readouterr().out == ""
    assert len(trainer.scalars) == 2 * 4


def test_each_step_writes_every_running_mean_and_the_lr_at_its_global_step(clock):
    trainer = Loop(n_x=2, n_u=None, max_epoch=3)
    trainer.epoch = 1
    trainer.run_epoch()
    assert trainer.scalars == [
        ("train/loss_a", 1.0, 2), ("train/loss_b", 2.0, 2), ("train/loss", 3.0, 2), ("train/lr", 0.0123, 2),
        ("train/loss_a", 1.5, 3), ("train/loss_b", 3.0, 3), ("train/loss", 4.5, 3), ("train/lr", 0.0123, 3),
    ]


def test_the_step_goes_through_ddp_when_the_trainer_has_one():
    trainer = Loop()
    trainer.ddp_step = lambda batch_x, batch_u: {"loss_ddp": torch.tensor(7.0, requires_grad=True)}
    trainer.batch_idx, trainer.num_batches = 0, 2
    assert trainer.forward_backward("x", "u") == {"loss_ddp": 7.0, "loss": 7.0}
    assert trainer.calls == [("backward", 7.0)]  # compute_loss not called, no LR step before the last batch
    trainer.batch_idx = 1
    trainer.forward_backward("x")
    assert trainer.calls[-1] == ("update_lr", 1)


def test_under_amp_the_scaler_scales_the_loss_and_steps_every_optimizer():
    events = []

    class Scaled:
        def __init__(self, loss):
            self.loss = loss

        def backward(self):
            events.append(("backward", self.loss.item()))

    trainer = Loop()
    trainer.scaler = SimpleNamespace(scale=lambda loss: events.append(("scale", loss.item())) or Scaled(loss),
                                     step=lambda optim: events.append(("step", optim)),
                                     update=lambda: events.append(("update",)))
    trainer._optims = {"a": "optim_a", "frozen": None, "b": "optim_b"}
    trainer.model_zero_grad = lambda: events.append(("zero_grad",))
    trainer.backward_and_update(torch.tensor(2.5))
    assert events == [("zero_grad",), ("scale", 2.5), ("backward", 2.5), ("step", "optim_a"), ("step", "optim_b"),
                      ("update",)]
    assert trainer.calls == []  # not the engine's fp32 update
