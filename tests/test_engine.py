"""The built-in engine: registries, config, views and sampling, epochs, schedules,
checkpoint and exact resume, the Classification evaluator, logging, error messages,
and the Dassl compatibility fixes (against a miniature Dassl with the same breakages)."""
import logging
import re
import sys

import mini_dassl as miniature_dassl
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from yacs.config import CfgNode as CN

from leclip.data import LEDatasetBase, build_view, read_image, register_view
from leclip.engine import (
    DATASET_REGISTRY,
    DEFAULT_CFG,
    TRAINER_REGISTRY,
    DataManager,
    DatasetBase,
    Datum,
    Registry,
    TrainerX,
    TrainerXU,
    build_dataset,
    build_evaluator,
    build_lr_scheduler,
    build_optimizer,
    build_trainer,
    get_cfg_default,
    load_checkpoint,
    resume_from_checkpoint,
    setup_logger,
)
from leclip.engine.checkpoint import CheckpointError

NUM_CLASSES = 3


def write_images(folder, per_class=8):
    """Tiny images whose dominant colour is the class, so a linear model can learn."""
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
    items = None  # set by the fixture
    with_val = False

    def __init__(self, cfg):
        items = ToyDataset.items
        val = items[::3] if ToyDataset.with_val else None
        super().__init__(train_x=items[::2], train_u=items[1::2], val=val, test=items)


class ToyTrainerMixin:
    def build_model(self):
        # dropout: training draws from the global RNG, which resume must reproduce
        self.model = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(3 * 8 * 8, NUM_CLASSES)).to(self.device)
        optim = build_optimizer(self.model, self.cfg.OPTIM)
        self.register_model("model", self.model, optim, build_lr_scheduler(optim, self.cfg.OPTIM))

    def step(self, batch):
        images, labels = batch["img"].to(self.device), batch["label"].to(self.device)
        loss = F.cross_entropy(self.model(images), labels)
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


class Killed(Exception):
    pass


class KilledAfterEpoch2(ToyTrainerX):
    def after_epoch(self):
        super().after_epoch()  # this epoch's checkpoint is on disk
        if self.epoch + 1 == 2:
            raise Killed


class ToyTwoModels(ToyTrainerX):
    """Two registered models (a second, untrained head), each with its own checkpoints."""

    def build_model(self):
        super().build_model()
        self.head = nn.Linear(2, 2)
        self.register_model("head", self.head)


for registry, cls in [
    (DATASET_REGISTRY, ToyDataset),
    (TRAINER_REGISTRY, ToyTrainerX),
    (TRAINER_REGISTRY, ToyTrainerXU),
    (TRAINER_REGISTRY, KilledAfterEpoch2),
    (TRAINER_REGISTRY, ToyTwoModels),
]:
    if cls.__name__ not in registry:
        registry.register(cls)


@pytest.fixture
def toy_cfg(tmp_path):
    ToyDataset.items = write_images(tmp_path)
    ToyDataset.with_val = False
    cfg = get_cfg_default()
    cfg.DATASET.NAME = "ToyDataset"
    cfg.TRAINER.NAME = "ToyTrainerX"
    cfg.INPUT.SIZE = (8, 8)
    cfg.INPUT.RRCROP_SCALE = (0.8, 1.0)
    cfg.DATALOADER.TRAIN_X.BATCH_SIZE = 4
    cfg.OPTIM.NAME = "sgd"
    cfg.OPTIM.LR = 0.05
    cfg.OPTIM.MAX_EPOCH = 4
    cfg.OPTIM.LR_SCHEDULER = "cosine"
    cfg.SEED = 7
    cfg.VERBOSE = False
    cfg.OUTPUT_DIR = str(tmp_path / "out")
    return cfg


# ---------------------------------------------------------------- registries, config, errors
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
    with pytest.raises(KeyError, match=r"Unknown view 'blurry'; valid views: (\S+, )*jitter, (\S+, )*strong, (\S+, )*test, weak \("):
        build_view(toy_cfg, "blurry")
    with pytest.raises(KeyError, match="View 'weak' is already registered"):
        register_view("weak", lambda cfg: None)


def test_defaults_use_dassl_keys_and_clip_statistics():
    cfg = get_cfg_default()
    assert cfg.DATALOADER.TRAIN_X.VIEWS == ["weak"] and cfg.DATALOADER.TRAIN_U.VIEWS == ["weak", "strong"]
    assert cfg.INPUT.PIXEL_MEAN == [0.48145466, 0.4578275, 0.40821073]
    assert cfg.INPUT.PIXEL_STD == [0.26862954, 0.26130258, 0.27577711]
    cfg.OPTIM.LR = 123.0
    assert DEFAULT_CFG.OPTIM.LR != 123.0  # a clone
    # a config written for a Dassl fork merges: every key it sets exists here
    dassl_style = CN(
        {
            "DATALOADER": {"TRAIN_X": {"BATCH_SIZE": 32, "SAMPLER": "RandomSampler"}, "TEST": {"BATCH_SIZE": 100},
                           "NUM_WORKERS": 8},
            "INPUT": {"SIZE": (224, 224), "INTERPOLATION": "bicubic", "TRANSFORMS": ["random_resized_crop"]},
            "OPTIM": {"NAME": "sgd", "LR": 0.002, "MAX_EPOCH": 50, "LR_SCHEDULER": "cosine", "WARMUP_EPOCH": 1,
                      "WARMUP_TYPE": "constant", "WARMUP_CONS_LR": 1e-5, "RMSPROP_ALPHA": 0.9},
            "TRAIN": {"PRINT_FREQ": 5, "CHECKPOINT_FREQ": 1, "COUNT_ITER": "train_u"},
            "TEST": {"FINAL_MODEL": "best_val", "PER_CLASS_RESULT": True, "NO_TEST": False},
            "DATASET": {"NUM_SHOTS": 16, "SUBSAMPLE_CLASSES": "base", "NUM_LABELED": 5},
            "MODEL": {"BACKBONE": {"NAME": "ViT-B/16"}, "INIT_WEIGHTS": ""},
        }
    )
    cfg.merge_from_other_cfg(dassl_style)
    assert cfg.OPTIM.WARMUP_TYPE == "constant"


def test_missing_and_unreadable_images_name_the_path(tmp_path, toy_cfg):
    with pytest.raises(FileNotFoundError, match="missing.png.*DATASET.ROOT"):
        read_image(str(tmp_path / "missing.png"))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    with pytest.raises(OSError, match="Cannot read image .*broken.jpg"):
        read_image(str(broken))
    # and through a loader
    data = LEDatasetBase(test=[Datum(str(tmp_path / "gone.png"), 0)], classnames=["a"])
    with pytest.raises(FileNotFoundError, match="gone.png"):
        next(iter(DataManager(toy_cfg, dataset=data).test_loader))


def test_missing_checkpoints_name_the_path(tmp_path, toy_cfg):
    with pytest.raises(FileNotFoundError, match='Checkpoint not found at ".*nowhere.pth"'):
        load_checkpoint(str(tmp_path / "nowhere.pth"))
    with pytest.raises(FileNotFoundError, match='No "checkpoint" file in ".*empty"'):
        resume_from_checkpoint(str(tmp_path / "empty"), nn.Linear(1, 1))
    trainer = build_trainer(toy_cfg)
    with pytest.raises(FileNotFoundError, match="No model at .*model.pth.tar-3"):
        trainer.load_model(str(tmp_path / "nothing"), epoch=3)


def test_unsupported_dataloader_options_are_refused(toy_cfg):
    toy_cfg.DATALOADER.K_TRANSFORMS = 2
    with pytest.raises(ValueError, match="DATALOADER.K_TRANSFORMS=2 is not supported.*VIEWS"):
        DataManager(toy_cfg, build_dataset(toy_cfg))
    toy_cfg.DATALOADER.K_TRANSFORMS = 1
    toy_cfg.DATALOADER.TRAIN_X.SAMPLER = "RandomDomainSampler"
    with pytest.raises(ValueError, match="'RandomDomainSampler'.*RandomSampler"):
        DataManager(toy_cfg, build_dataset(toy_cfg))


# ---------------------------------------------------------------- data
def first_batch(cfg):
    return next(iter(DataManager(cfg, build_dataset(cfg)).train_loader_x))


def test_sampling_depends_on_the_seed_only(toy_cfg):
    torch.manual_seed(0)
    a = first_batch(toy_cfg)
    torch.manual_seed(99)  # the global RNG plays no part
    state = torch.get_rng_state()
    b = first_batch(toy_cfg)
    assert torch.equal(torch.get_rng_state(), state)  # ... and is left untouched
    assert a["index"].tolist() == b["index"].tolist() and torch.equal(a["img"], b["img"])
    orders = set()
    for seed in range(1, 5):
        toy_cfg.SEED = seed
        orders.add(tuple(first_batch(toy_cfg)["index"].tolist()))
    assert len(orders) > 1


def test_set_epoch_reseeds_the_loaders(toy_cfg):
    dm = DataManager(toy_cfg, build_dataset(toy_cfg))

    def epoch_order(epoch):
        dm.set_epoch(epoch)
        return [i for batch in dm.train_loader_x for i in batch["index"].tolist()]

    assert epoch_order(1) == epoch_order(1)
    assert epoch_order(1) != epoch_order(2)
    assert sorted(epoch_order(2)) == sorted(range(12))  # each image once per epoch


def test_views_do_not_depend_on_worker_processes(toy_cfg):
    toy_cfg.DATALOADER.TRAIN_X.VIEWS = ["strong"]
    in_process = first_batch(toy_cfg)
    toy_cfg.DATALOADER.NUM_WORKERS = 1
    in_worker = first_batch(toy_cfg)
    assert torch.equal(in_process["img"], in_worker["img"])


def test_batch_layout_and_drop_last(toy_cfg):
    toy_cfg.DATALOADER.TRAIN_U.SAME_AS_X = False
    toy_cfg.DATALOADER.TRAIN_U.BATCH_SIZE = 5
    toy_cfg.DATALOADER.TRAIN_U.VIEWS = ["weak", "strong", "jitter"]
    dm = DataManager(toy_cfg, build_dataset(toy_cfg))
    batches = list(dm.train_loader_u)
    assert [len(b["index"]) for b in batches] == [5, 5]  # 12 images: the last 2 dropped
    batch = batches[0]
    assert batch["img_weak"].shape == batch["img_strong"].shape == batch["img_jitter"].shape == (5, 3, 8, 8)
    assert torch.equal(batch["img"], batch["img_weak"]) and not torch.equal(batch["img_weak"], batch["img_strong"])
    assert batch["label"].dtype == torch.long and batch["domain"].tolist() == [0] * 5
    assert all(path.endswith(".png") for path in batch["impath"])
    # a set smaller than the batch keeps all its images
    toy_cfg.DATALOADER.TRAIN_X.BATCH_SIZE = 50
    assert [len(b["index"]) for b in DataManager(toy_cfg, build_dataset(toy_cfg)).train_loader_x] == [12]


def test_multi_hot_labels_collate_to_float(toy_cfg):
    items = [Datum(d.impath, (1, 0, 1)) for d in ToyDataset.items[:4]]
    data = LEDatasetBase(train_x=items, test=items, classnames=["a", "b", "c"])
    dm = DataManager(toy_cfg, dataset=data)
    batch = next(iter(dm.test_loader))
    assert batch["label"].dtype == torch.float32 and batch["label"].tolist() == [[1.0, 0.0, 1.0]] * 4
    assert dm.train_loader_u is None and dm.val_loader is None


# ---------------------------------------------------------------- optimizer and schedules
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


def optim_cfg(**overrides):
    cfg = get_cfg_default().OPTIM
    for key, value in overrides.items():
        cfg[key] = value
    return cfg


def test_cosine_with_constant_warmup():
    cfg = optim_cfg(LR=0.002, MAX_EPOCH=4, LR_SCHEDULER="cosine", WARMUP_EPOCH=1, WARMUP_TYPE="constant",
                    WARMUP_CONS_LR=1e-5)
    # one warm-up epoch, then the cosine from its epoch 0 (WARMUP_RECOUNT)
    # 0.002 * (1 + cos(pi * t / 4)) / 2 for t = 0..3
    assert lrs(cfg, 5) == pytest.approx([1e-5, 0.002, 0.00170710678, 0.001, 0.000292893219], rel=1e-8)


def test_cosine_with_linear_warmup():
    cfg = optim_cfg(LR=0.1, MAX_EPOCH=4, LR_SCHEDULER="cosine", WARMUP_EPOCH=2, WARMUP_TYPE="linear",
                    WARMUP_MIN_LR=1e-3)
    # epoch 0: the minimum; epoch 1: LR * 1/2; then cosine epochs 0, 1, 2
    assert lrs(cfg, 5) == pytest.approx([1e-3, 0.05, 0.1, 0.085355339, 0.05], rel=1e-8)


def test_step_schedules_and_warmup_without_recount():
    cfg = optim_cfg(LR=0.1, MAX_EPOCH=8, LR_SCHEDULER="single_step", STEPSIZE=(2,), GAMMA=0.5)
    assert np.allclose(lrs(cfg, 5), [0.1, 0.1, 0.05, 0.05, 0.025])
    cfg = optim_cfg(LR=0.1, MAX_EPOCH=8, LR_SCHEDULER="multi_step", STEPSIZE=(1, 3), GAMMA=0.1)
    assert np.allclose(lrs(cfg, 4), [0.1, 0.01, 0.01, 0.001])
    # Dassl without recount: the step schedule keeps counting from epoch 0, restarting
    # from the full LR after warm-up (epochs 0-2 warm, decays at epochs 4 and 6)
    cfg = optim_cfg(LR=0.1, MAX_EPOCH=8, LR_SCHEDULER="single_step", STEPSIZE=(2,), GAMMA=0.5, WARMUP_EPOCH=3,
                    WARMUP_TYPE="constant", WARMUP_CONS_LR=0.01, WARMUP_RECOUNT=False)
    assert np.allclose(lrs(cfg, 7), [0.01, 0.01, 0.01, 0.1, 0.05, 0.05, 0.025])


def test_staged_lr_and_bad_names():
    model = nn.Sequential()
    model.add_module("base", nn.Linear(2, 2))
    model.add_module("head", nn.Linear(2, 1))
    cfg = optim_cfg(NAME="sgd", LR=0.1, STAGED_LR=True, NEW_LAYERS=("head",), BASE_LR_MULT=0.1)
    optim = build_optimizer(model, cfg)
    assert [g["lr"] for g in optim.param_groups] == pytest.approx([0.01, 0.1])
    assert optim.param_groups[1]["params"][0] is model.head.weight
    with pytest.raises(ValueError, match="OPTIM.NAME='lbfgs'"):
        build_optimizer(model, optim_cfg(NAME="lbfgs"))
    with pytest.raises(ValueError, match="no parameter to optimize"):
        build_optimizer([], optim_cfg())
    with pytest.raises(ValueError, match="OPTIM.LR_SCHEDULER='poly'"):
        build_lr_scheduler(optim, optim_cfg(LR_SCHEDULER="poly"))
    with pytest.raises(ValueError, match="OPTIM.WARMUP_TYPE='exp'"):
        build_lr_scheduler(optim, optim_cfg(WARMUP_EPOCH=1, WARMUP_TYPE="exp"))


# ---------------------------------------------------------------- trainers
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


def test_bad_count_iter_is_named(toy_cfg):
    toy_cfg.TRAINER.NAME = "ToyTrainerXU"
    toy_cfg.TRAIN.COUNT_ITER = "longer_one"
    with pytest.raises(ValueError, match="TRAIN.COUNT_ITER='longer_one'"):
        build_trainer(toy_cfg).train()


def test_training_logs_dassl_lines(toy_cfg, capsys):
    toy_cfg.OPTIM.MAX_EPOCH = 1
    trainer = build_trainer(toy_cfg)
    trainer.train()
    out = capsys.readouterr().out
    assert re.search(
        r"epoch \[1/1\] batch \[3/3\] time [\d.]+ \([\d.]+\) data [\d.]+ \([\d.]+\) loss [\d.]+ \([\d.]+\) "
        r"lr \d\.\d{4}e[-+]\d\d eta 0:00:00",
        out,
    )
    assert "No checkpoint found, train from scratch" in out
    assert "Finish training\nDeploy the last-epoch model\nEvaluate on the *test* set\n=> result" in out
    assert re.search(r"\* accuracy: [\d.]+%", out)
    assert trainer.test_results["accuracy"] == trainer.evaluator.last_results["accuracy"]


def final_state(cfg, rng_seed):
    torch.manual_seed(rng_seed)  # the global RNG at start differs between runs
    trainer = build_trainer(cfg)
    trainer.train()
    return trainer


def test_kill_and_resume_reaches_the_uninterrupted_result(toy_cfg, tmp_path, capsys):
    toy_cfg.TRAIN.CHECKPOINT_FREQ = 1
    toy_cfg.DATALOADER.TRAIN_X.VIEWS = ["strong"]  # random augmentation must resume too
    toy_cfg.OPTIM.WARMUP_EPOCH = 1
    toy_cfg.OPTIM.WARMUP_TYPE = "linear"
    toy_cfg.OUTPUT_DIR = str(tmp_path / "straight")
    straight = final_state(toy_cfg, 0)

    toy_cfg.OUTPUT_DIR = str(tmp_path / "killed")
    killed = toy_cfg.clone()
    killed.TRAINER.NAME = "KilledAfterEpoch2"
    with pytest.raises(Killed):
        final_state(killed, 1)
    capsys.readouterr()
    # a fresh trainer on the same output folder resumes at epoch 3
    resumed = final_state(toy_cfg, 2)
    assert "will resume training" in capsys.readouterr().out and resumed.start_epoch == 2

    straight_weights, resumed_weights = straight.model.state_dict(), resumed.model.state_dict()
    for key in straight_weights:
        assert torch.equal(straight_weights[key], resumed_weights[key]), key
    assert straight.test_results == resumed.test_results
    assert straight.get_current_lr() == resumed.get_current_lr()


def test_checkpoints_hold_tensors_and_plain_values_only(toy_cfg, tmp_path):
    toy_cfg.OPTIM.MAX_EPOCH = 1
    toy_cfg.OPTIM.WARMUP_EPOCH = 1
    build_trainer(toy_cfg).train()
    path = tmp_path / "out" / "model" / "model.pth.tar-1"
    assert torch.serialization.get_unsafe_globals_in_checkpoint(str(path)) == []
    state = load_checkpoint(str(path))["trainer_state"]["rng"]
    assert isinstance(state["numpy"]["key"], torch.Tensor) and isinstance(state["python"][1], tuple)


def test_resume_from_the_epoch_every_model_has(toy_cfg, tmp_path, capsys):
    """A run killed between saving two models' checkpoints resumes from their common epoch."""
    toy_cfg.TRAINER.NAME = "ToyTwoModels"
    toy_cfg.TRAIN.CHECKPOINT_FREQ = 1
    toy_cfg.OPTIM.MAX_EPOCH = 2
    toy_cfg.TEST.NO_TEST = True
    build_trainer(toy_cfg).train()
    head = tmp_path / "out" / "head"
    (head / "model.pth.tar-2").unlink()  # the model checkpoint of epoch 2 was saved, the head's not
    (head / "checkpoint").write_text("model.pth.tar-1\n")
    capsys.readouterr()
    toy_cfg.OPTIM.MAX_EPOCH = 3
    resumed = build_trainer(toy_cfg)
    resumed.train()
    out = capsys.readouterr().out
    assert "stop at different epochs {'model': 2, 'head': 1}: resuming from epoch 1" in out
    assert resumed.start_epoch == 1 and "model.pth.tar-1" in out


def test_log_is_written_line_by_line(tmp_path):
    stdout = sys.stdout
    try:
        setup_logger(str(tmp_path))
        print("a line")  # no flush: a run killed now keeps it
        assert (tmp_path / "log.txt").read_text() == "a line\n"
    finally:
        sys.stdout = stdout


def test_random_seed_is_kept_across_a_resume(toy_cfg):
    toy_cfg.SEED = -1
    toy_cfg.TEST.NO_TEST = True
    killed = toy_cfg.clone()
    killed.TRAINER.NAME = "KilledAfterEpoch2"
    toy_cfg.TRAIN.CHECKPOINT_FREQ = killed.TRAIN.CHECKPOINT_FREQ = 1
    first = build_trainer(killed)
    with pytest.raises(Killed):
        first.train()
    resumed = build_trainer(toy_cfg)
    assert resumed.seed != first.seed  # drawn afresh ...
    resumed.train()
    assert resumed.seed == first.seed  # ... until the checkpoint gives the run's own back


def test_best_val_saves_the_best_model_and_resumes_from_the_last(toy_cfg, tmp_path, capsys):
    ToyDataset.with_val = True
    toy_cfg.TEST.FINAL_MODEL = "best_val"
    toy_cfg.OPTIM.MAX_EPOCH = 2
    trainer = build_trainer(toy_cfg)
    trainer.train()
    out = capsys.readouterr().out
    assert out.count("Evaluate on the *val* set") == 2
    assert "Deploy the model with the best val performance" in out
    folder = tmp_path / "out" / "model"
    assert (folder / "model-best.pth.tar").exists()
    assert (folder / "checkpoint").read_text() == "model.pth.tar-2\n"
    assert load_checkpoint(str(folder / "model-best.pth.tar"))["val_result"] == trainer.best_result


# ---------------------------------------------------------------- evaluator
def test_classification_evaluator_hand_values(toy_cfg, capsys):
    toy_cfg.TEST.PER_CLASS_RESULT = True
    evaluator = build_evaluator(toy_cfg, lab2cname={0: "a", 1: "b", 2: "c"})
    logits = torch.tensor([[2.0, 0, 0], [0, 2, 0], [0, 2, 0], [0, 0, 2]])
    evaluator.process(logits, torch.tensor([0, 1, 2, 2]))
    results = evaluator.evaluate()
    assert list(results)[:3] == ["accuracy", "error_rate", "macro_f1"]
    assert results["accuracy"] == pytest.approx(75.0) and results["error_rate"] == pytest.approx(25.0)
    # per-class F1: 1, 2/3, 2/3; per-class accuracy: 1, 1, 1/2
    assert results["macro_f1"] == pytest.approx(100 * (1 + 2 / 3 + 2 / 3) / 3)
    assert results["perclass_accuracy"] == pytest.approx(100 * 2.5 / 3)
    assert evaluator.last_results is results
    out = capsys.readouterr().out
    assert "=> result\n* total: 4\n* correct: 3\n* accuracy: 75.0%\n* error: 25.0%\n* macro_f1: 77.8%" in out
    assert "* class: 2 (c)\ttotal: 2\tcorrect: 1\tacc: 50.0%" in out
    evaluator.reset()
    with pytest.raises(RuntimeError, match="no prediction was processed"):
        evaluator.evaluate()


# ---------------------------------------------------------------- logging
def test_setup_logger_twice_writes_each_line_once(tmp_path):
    stdout = sys.stdout
    try:
        setup_logger(str(tmp_path))
        setup_logger(str(tmp_path))
        print("printed once")
        logging.getLogger("leclip").info("logged once")
        sys.stdout.flush()
    finally:
        sys.stdout = stdout
    text = (tmp_path / "log.txt").read_text()
    assert text.count("printed once") == 1 and text.count("logged once") == 1


# ---------------------------------------------------------------- Dassl compatibility
# (against the miniature Dassl of tests/mini_dassl.py, which has Dassl's breakages)
@pytest.fixture
def mini_dassl(tmp_path):
    from leclip import dassl_compat

    with miniature_dassl.installed(str(tmp_path / "pkg")):
        yield dassl_compat


class Payload:
    """A pickle that creates `marker` when it is unpickled."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


def dassl_checkpoint(optim_class):
    """What Dassl's save_model writes for a model with a constant warm-up scheduler."""
    from dassl.optim.lr_scheduler import ConstantWarmupScheduler

    param = nn.Parameter(torch.zeros(2))
    optim = optim_class([param], lr=0.1)
    successor = torch.optim.lr_scheduler.CosineAnnealingLR(optim, 4.0)
    warmup = ConstantWarmupScheduler(optim, successor, 1, 1e-5)
    param.grad = torch.ones(2)
    optim.step()
    warmup.step()
    return {"state_dict": {"w": param.detach()}, "epoch": 1, "optimizer": optim.state_dict(),
            "scheduler": warmup.state_dict(), "val_result": 50.0}


def test_dassl_compat_fixes_the_breakages(mini_dassl, tmp_path):
    from dassl.optim.lr_scheduler import ConstantWarmupScheduler
    from dassl.utils import load_checkpoint as dassl_load
    from dassl.utils.logger import Logger

    optim = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    successor = torch.optim.lr_scheduler.CosineAnnealingLR(optim, 4.0)
    with pytest.raises(TypeError):
        ConstantWarmupScheduler(optim, successor, 1, 1e-5)
    fixes = ["warmup_verbose", "warmup_resume", "checkpoint_load", "checkpoint_messages", "np_int",
             "logger_console", "resume_without_models", "resume_messages", "logging_disabled", "load_model_val_result"]
    assert mini_dassl.needed() == fixes and logging.root.manager.disable == logging.WARNING
    assert mini_dassl.patch() == fixes
    assert mini_dassl.patch() == [] and mini_dassl.needed() == []  # idempotent: nothing left to fix
    warmup = ConstantWarmupScheduler(optim, successor, 1, 1e-5)
    assert optim.param_groups[0]["lr"] == 1e-5 and warmup.warmup_epoch == 1
    # resumed past the warm-up, it steps its own optimizer on the cosine, as an uninterrupted one
    warmup.step()
    warmup.step()
    torch.save({"scheduler": warmup.state_dict()}, tmp_path / "sched")
    resumed_optim = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    resumed = ConstantWarmupScheduler(resumed_optim, torch.optim.lr_scheduler.CosineAnnealingLR(resumed_optim, 4.0),
                                      1, 1e-5)
    resumed_optim.load_state_dict(optim.state_dict())  # as a resume does: built, then the optimizer, then this
    resumed.load_state_dict(dassl_load(str(tmp_path / "sched"))["scheduler"])
    before = optim.param_groups[0]["lr"]
    warmup.step()
    resumed.step()
    assert resumed.successor.optimizer is resumed_optim
    assert resumed_optim.param_groups[0]["lr"] == optim.param_groups[0]["lr"] != before
    assert np.int is int
    from dassl.data.transforms.randaugment import posterize

    assert posterize([250], 4).tolist() == [240]
    # the logger closes its file, not the console it wraps
    console = sys.stdout
    logger = Logger(str(tmp_path / "log.txt"))
    logger.write("one line\n")
    logger.close()
    assert not console.closed and logger.file.closed and (tmp_path / "log.txt").read_text() == "one line\n"
    # a trainer without models starts at epoch 0; logging is on again
    from dassl.engine.trainer import TrainerBase

    assert TrainerBase().resume_model_if_exist(str(tmp_path)) == 0
    assert logging.root.manager.disable == logging.NOTSET
    # a checkpoint without a validation result loads (Dassl saves each epoch's so)
    trainer, model = TrainerBase(), nn.Linear(2, 1)
    trainer.register_model("head", model)
    (tmp_path / "head").mkdir()
    saved = {"weight": torch.tensor([[1.0, 2.0]]), "bias": torch.tensor([3.0])}
    torch.save({"state_dict": saved, "epoch": 4, "val_result": None}, tmp_path / "head" / "model.pth.tar-4")
    trainer.load_model(str(tmp_path), epoch=4)
    assert model.weight.tolist() == [[1.0, 2.0]] and model.bias.tolist() == [3.0]
    assert torch.load(tmp_path / "head" / "model.pth.tar-4")["val_result"] is None  # the file is unchanged
    # resuming: one message naming the file and the fix for a changed shape, an empty marker, a truncated file
    run = tmp_path / "run" / "head"
    run.mkdir(parents=True)
    saved = nn.Linear(2, 1).state_dict()
    torch.save({"state_dict": saved, "epoch": 3}, run / "model.pth.tar-3")
    (run / "checkpoint").write_text("model.pth.tar-3\n")
    trainer, model = TrainerBase(), nn.Linear(2, 1)
    trainer.register_model("head", model)
    assert trainer.resume_model_if_exist(str(run.parent)) == 3
    assert torch.equal(model.weight, saved["weight"]) and torch.equal(model.bias, saved["bias"])
    wider = TrainerBase()
    wider.register_model("head", nn.Linear(3, 1))
    with pytest.raises(CheckpointError, match=f"The model in {re.escape(str(run))} does not fit the one this config "
                                              r"builds \(size mismatch for weight"):
        wider.resume_model_if_exist(str(run.parent))
    (run / "checkpoint").write_text("")
    with pytest.raises(CheckpointError, match=f"{re.escape(str(run / 'checkpoint'))} is empty"):
        trainer.resume_model_if_exist(str(run.parent))
    (run / "checkpoint").write_text("model.pth.tar-3\n")
    (run / "model.pth.tar-3").write_bytes((run / "model.pth.tar-3").read_bytes()[:100])
    with pytest.raises(CheckpointError, match=f"Checkpoint {re.escape(str(run / 'model.pth.tar-3'))} is truncated or "
                                              f"corrupt .*: delete it, or delete {re.escape(str(run.parent))} to start"):
        trainer.resume_model_if_exist(str(run.parent))
    # a fork's own checkpoints load: the warm-up scheduler's state holds its successor and optimizer
    for optim_class in (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW, torch.optim.RMSprop):
        torch.save(dassl_checkpoint(optim_class), tmp_path / "ckpt")
        loaded = dassl_load(str(tmp_path / "ckpt"))
        assert isinstance(loaded["scheduler"]["successor"], torch.optim.lr_scheduler.CosineAnnealingLR)
        assert isinstance(loaded["scheduler"]["successor"].optimizer, optim_class)


def test_dassl_compat_never_unpickles_other_objects(mini_dassl, tmp_path):
    from dassl.utils import load_checkpoint as dassl_load

    mini_dassl.patch()
    marker = tmp_path / "payload-ran"
    torch.save({"state_dict": {"w": Payload(marker)}, "epoch": 1}, tmp_path / "evil")
    refused = f"File {re.escape(str(tmp_path / 'evil'))} holds Python objects .*it holds exec.* could run code"
    with pytest.raises(CheckpointError, match=refused):
        dassl_load(str(tmp_path / "evil"))
    assert not marker.exists()
    # the allow-list is Dassl's only: the rest of the process still refuses Dassl's classes
    torch.save(dassl_checkpoint(torch.optim.SGD), tmp_path / "ckpt")
    with pytest.raises(Exception, match="(?i)weights only load failed"):
        torch.load(tmp_path / "ckpt")
    with pytest.raises(Exception, match="(?i)weights only load failed"):
        torch.load(tmp_path / "evil")
    assert not marker.exists()
