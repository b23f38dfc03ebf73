"""The built-in engine: registries, sampling, epochs, schedules, checkpoint/resume, errors."""
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from leclip.engine import (
    DATASET_REGISTRY,
    TRAINER_REGISTRY,
    DataManager,
    DatasetBase,
    Datum,
    Registry,
    TrainerX,
    TrainerXU,
    build_evaluator,
    build_lr_scheduler,
    build_optimizer,
    build_trainer,
    build_view,
    get_cfg_default,
    load_checkpoint,
    set_random_seed,
)
from leclip.dataset_base import LEDatasetBase
from leclip.engine.datamanager import read_image

NUM_CLASSES = 3


def write_images(folder, per_class=8):
    """Tiny images whose mean colour encodes the class, so a linear model can learn."""
    items = []
    rng = np.random.default_rng(0)
    for label in range(NUM_CLASSES):
        for i in range(per_class):
            pixels = rng.integers(0, 60, size=(8, 8, 3), dtype=np.uint8)
            pixels[..., label] += 150
            path = folder / f"c{label}_{i}.png"
            Image.fromarray(pixels).save(path)
            items.append(Datum(str(path), label, classname=f"class{label}"))
    return items


class ToyDataset(DatasetBase):
    items = None

    def __init__(self, cfg):
        items = ToyDataset.items
        super().__init__(train_x=items[::2], train_u=items[1::2], test=items)


class ToyTrainerMixin:
    def build_model(self):
        self.model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, NUM_CLASSES))
        optim = build_optimizer(self.model, self.cfg.OPTIM)
        self.register_model("model", self.model, optim, build_lr_scheduler(optim, self.cfg.OPTIM))

    def step(self, batch):
        loss = F.cross_entropy(self.model(batch["img"]), batch["label"])
        self.model_backward_and_update(loss)
        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()
        return {"loss": loss.item()}


class ToyTrainerX(ToyTrainerMixin, TrainerX):
    def forward_backward(self, batch):
        return self.step(batch)


class ToyTrainerXU(ToyTrainerMixin, TrainerXU):
    def forward_backward(self, batch_x, batch_u):
        self.seen_u = getattr(self, "seen_u", 0) + len(batch_u["index"])
        return self.step(batch_x)


for cls in (ToyDataset, ToyTrainerX, ToyTrainerXU):
    registry = DATASET_REGISTRY if cls is ToyDataset else TRAINER_REGISTRY
    if cls.__name__ not in registry:
        registry.register(cls)


@pytest.fixture
def toy_cfg(tmp_path):
    ToyDataset.items = write_images(tmp_path)
    cfg = get_cfg_default()
    cfg.DATASET.NAME = "ToyDataset"
    cfg.TRAINER.NAME = "ToyTrainerX"
    cfg.INPUT.SIZE = (8, 8)
    cfg.INPUT.RRCROP_SCALE = (0.8, 1.0)
    cfg.DATALOADER.TRAIN_X.BATCH_SIZE = 4
    cfg.OPTIM.LR = 0.05
    cfg.OPTIM.MAX_EPOCH = 4
    cfg.OPTIM.LR_SCHEDULER = "cosine"
    cfg.SEED = 7
    cfg.VERBOSE = False
    cfg.OUTPUT_DIR = str(tmp_path / "out")
    return cfg


def test_registry_rejects_duplicates_and_lists_names():
    registry = Registry("THING")

    @registry.register()
    class Alpha:
        pass

    with pytest.raises(KeyError, match="already registered"):
        registry.register(Alpha)
    with pytest.raises(KeyError, match="registered: Alpha"):
        registry.get("Beta")


def test_unknown_trainer_evaluator_and_view_list_valid_names(toy_cfg):
    toy_cfg.TRAINER.NAME = "NoSuchTrainer"
    with pytest.raises(KeyError, match="Unknown trainer 'NoSuchTrainer'.*ToyTrainerX"):
        build_trainer(toy_cfg)
    toy_cfg.TEST.EVALUATOR = "NoSuchEvaluator"
    with pytest.raises(KeyError, match="Unknown evaluator 'NoSuchEvaluator'.*Classification"):
        build_evaluator(toy_cfg)
    with pytest.raises(KeyError, match="Unknown view 'blurry'; valid views: .*strong"):
        build_view(toy_cfg, "blurry")


def test_missing_and_unreadable_images_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.png"):
        read_image(str(tmp_path / "missing.png"))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    with pytest.raises(OSError, match="broken.jpg"):
        read_image(str(broken))


def test_missing_checkpoint_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        load_checkpoint(str(tmp_path / "nowhere.pth"))


def first_batch_indices(cfg, seed):
    torch.manual_seed(seed)
    return next(iter(DataManager(cfg).train_loader_x))["index"].tolist()


def test_sampling_is_deterministic_per_seed(toy_cfg):
    assert first_batch_indices(toy_cfg, 1) == first_batch_indices(toy_cfg, 1)
    orders = {tuple(first_batch_indices(toy_cfg, s)) for s in range(2, 7)}
    assert len(orders) > 1


def test_views_and_batch_layout(toy_cfg):
    toy_cfg.DATALOADER.TRAIN_U.VIEWS = ["weak", "strong"]
    batch = next(iter(DataManager(toy_cfg).train_loader_u))
    assert batch["img_weak"].shape == batch["img_strong"].shape == (4, 3, 8, 8)
    assert torch.equal(batch["img"], batch["img_weak"])
    assert batch["label"].dtype == torch.long and len(batch["impath"]) == 4


def test_multi_hot_labels_collate_to_float(toy_cfg, tmp_path):
    items = [Datum(d.impath, (1, 0, 1)) for d in ToyDataset.items[:4]]
    data = LEDatasetBase(train_x=items, test=items, classnames=["a", "b", "c"])
    batch = next(iter(DataManager(toy_cfg, dataset=data).test_loader))
    assert batch["label"].dtype == torch.float32 and batch["label"].shape == (4, 3)


@pytest.mark.parametrize("count_iter,expected", [("train_x", 3), ("train_u", 2), ("smaller_one", 2)])
def test_trainer_xu_epoch_length(toy_cfg, count_iter, expected):
    toy_cfg.TRAINER.NAME = "ToyTrainerXU"
    toy_cfg.DATALOADER.TRAIN_U.SAME_AS_X = False
    toy_cfg.DATALOADER.TRAIN_U.BATCH_SIZE = 5  # 12 unlabeled -> 2 batches; 12 labeled / 4 -> 3
    toy_cfg.TRAIN.COUNT_ITER = count_iter
    toy_cfg.OPTIM.MAX_EPOCH = 1
    toy_cfg.TEST.NO_TEST = True
    trainer = build_trainer(toy_cfg)
    trainer.train()
    assert trainer.num_batches == expected and trainer.seen_u == 5 * expected


def lrs(optim_cfg, epochs):
    param = nn.Parameter(torch.zeros(1))
    optim = torch.optim.SGD([param], lr=optim_cfg.LR)
    sched = build_lr_scheduler(optim, optim_cfg)
    values = []
    for _ in range(epochs):
        values.append(optim.param_groups[0]["lr"])
        optim.step()
        sched.step()
    return values


def test_cosine_with_constant_warmup_matches_hand_values():
    cfg = get_cfg_default().OPTIM
    cfg.LR, cfg.MAX_EPOCH, cfg.LR_SCHEDULER = 0.002, 4, "cosine"
    cfg.WARMUP_EPOCH, cfg.WARMUP_TYPE, cfg.WARMUP_CONS_LR = 1, "constant", 1e-5
    # warm-up epoch, then cosine restarted at 0 (Dassl's WARMUP_RECOUNT)
    expected = [1e-5] + [0.002 * 0.5 * (1 + math.cos(math.pi * t / 4)) for t in range(4)]
    assert np.allclose(lrs(cfg, 5), expected)


def test_linear_warmup_then_single_step():
    cfg = get_cfg_default().OPTIM
    cfg.LR, cfg.MAX_EPOCH, cfg.LR_SCHEDULER, cfg.STEPSIZE, cfg.GAMMA = 0.1, 6, "single_step", (2,), 0.5
    cfg.WARMUP_EPOCH, cfg.WARMUP_TYPE, cfg.WARMUP_MIN_LR = 2, "linear", 1e-3
    assert np.allclose(lrs(cfg, 6), [1e-3, 0.05, 0.1, 0.1, 0.05, 0.05])


def test_bad_optimizer_and_scheduler_names(toy_cfg):
    toy_cfg.OPTIM.NAME = "lbfgs"
    with pytest.raises(ValueError, match="OPTIM.NAME='lbfgs'"):
        build_optimizer(nn.Linear(2, 2), toy_cfg.OPTIM)
    toy_cfg.OPTIM.LR_SCHEDULER = "poly"
    optim = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1)
    with pytest.raises(ValueError, match="OPTIM.LR_SCHEDULER='poly'"):
        build_lr_scheduler(optim, toy_cfg.OPTIM)


class Killed(Exception):
    pass


class KilledAfterEpoch2(ToyTrainerX):
    def after_epoch(self):
        super().after_epoch()  # the checkpoint of this epoch is on disk
        if self.epoch + 1 == 2:
            raise Killed


if "KilledAfterEpoch2" not in TRAINER_REGISTRY:
    TRAINER_REGISTRY.register(KilledAfterEpoch2)


def build_seeded(cfg):
    set_random_seed(cfg.SEED)  # as train.py does before building the trainer
    return build_trainer(cfg)


def final_state(cfg):
    trainer = build_seeded(cfg)
    trainer.train()
    return trainer.model.state_dict(), trainer.test_results


def test_kill_and_resume_reaches_the_uninterrupted_result(toy_cfg, tmp_path):
    toy_cfg.TRAIN.CHECKPOINT_FREQ = 1
    toy_cfg.DATALOADER.TRAIN_X.VIEWS = ["strong"]  # random augmentation must resume too
    toy_cfg.OUTPUT_DIR = str(tmp_path / "straight")
    weights_straight, results_straight = final_state(toy_cfg)

    toy_cfg.OUTPUT_DIR = str(tmp_path / "killed")
    killed = toy_cfg.clone()
    killed.TRAINER.NAME = "KilledAfterEpoch2"
    with pytest.raises(Killed):
        build_seeded(killed).train()
    # a fresh process on the same output folder resumes at epoch 3
    weights_resumed, results_resumed = final_state(toy_cfg)

    for key in weights_straight:
        assert torch.equal(weights_straight[key], weights_resumed[key]), key
    assert results_straight == results_resumed


def test_classification_evaluator_hand_values(toy_cfg):
    evaluator = build_evaluator(toy_cfg)
    logits = torch.tensor([[2.0, 0, 0], [0, 2, 0], [0, 2, 0], [0, 0, 2]])
    evaluator.process(logits, torch.tensor([0, 1, 2, 2]))
    results = evaluator.evaluate()
    assert results["accuracy"] == pytest.approx(75.0)
    # per-class F1: 1, 2/3, 2/3
    assert results["macro_f1"] == pytest.approx(100 * (1 + 2 / 3 + 2 / 3) / 3)
    assert evaluator.last_results is results
