"""CLIPTrainer's hooks around the engine, on a stand-in built without the engine's
__init__ (what mutmut's survivors showed untested): the data checks and their messages,
the order of the hooks around the strategy's, the state carried in checkpoints, the
pruning of earlier checkpoints, the zero-shot train(), the default predict, and the
evaluation's split, scalars and result."""
import warnings
from types import SimpleNamespace

import pytest
import torch

from leclip import distributed, evaluators, ssl, trainer_base
from leclip.dassl import get_cfg_default
from leclip.engine.trainer import SimpleTrainer, TrainerBase
from leclip.trainer_base import CLIPTrainer
from test_wiring import backbone, build  # noqa: F401 (backbone: a fixture)


class Method(CLIPTrainer):
    pass


class MultiLabelMethod(CLIPTrainer):
    tasks = ("B", "C")


def bare(cls=Method, **cfg_overrides):
    cfg = get_cfg_default()
    cfg.DATASET.NAME = "SomeData"
    for dotted, value in cfg_overrides.items():
        node = cfg
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    trainer = object.__new__(cls)
    trainer.cfg, trainer.device, trainer.events, trainer._models = cfg, torch.device("cpu"), [], {}
    return trainer


# ---------------------------------------------------------------- data checks
@pytest.fixture
def data(monkeypatch):
    """build_data_loader with a stand-in DataManager: data(task, train_u) -> trainer's view."""
    named = []
    monkeypatch.setattr(evaluators, "name_in_cfg", lambda task, cfg: named.append((task, cfg.DATASET.NAME)))

    def use(task, train_u="loader_u", has_task=True):
        dataset = SimpleNamespace(task=task) if has_task else SimpleNamespace()

        class DM:
            def __init__(self, cfg, built):
                assert built == "built"

            def attach(self, trainer):
                trainer.dm, trainer.train_loader_u = SimpleNamespace(dataset=dataset), train_u

        monkeypatch.setattr(trainer_base, "DataManager", DM)
        monkeypatch.setattr(trainer_base, "build_dataset", lambda cfg: "built")
        return named

    return use


def test_a_task_the_method_does_not_serve_is_named(data):
    data("multilabel")
    trainer = bare(**{"DATASET.SETTING": "unsup"})
    with pytest.raises(ValueError, match=r"^Method does not serve SomeData's task \(B \(unsupervised multi-label "
                                         r"classification\)\); it serves task A \(fine-grained open-set "
                                         r"semi-supervised classification\) \(see the README's method table\)$"):
        trainer.build_data_loader()


def test_fixmatch_on_multilabel_data_is_refused(data):
    data("multilabel")
    trainer = bare(MultiLabelMethod, **{"DATASET.SETTING": "unsup", "TRAINER.SSL.MODE": "fixmatch"})
    with pytest.raises(ValueError, match=r"^TRAINER.SSL.MODE fixmatch is single-label .*: use TRAINER.SSL.MODE none "
                                         r"on multi-label data$"):
        trainer.build_data_loader()


def test_without_fixmatch_the_unlabeled_loader_is_dropped_and_the_evaluator_named(data):
    named = data("ossl")
    trainer = bare(**{"TRAINER.SSL.MODE": "none"})
    trainer.build_data_loader()
    assert trainer.train_loader_u is None and trainer.task == "ossl" and named == [("ossl", "SomeData")]
    named = data("ossl")
    trainer = bare(**{"TRAINER.SSL.MODE": "fixmatch"})
    trainer.build_data_loader()
    assert trainer.train_loader_u == "loader_u"
    data("ignored", has_task=False)
    trainer = bare(**{"TRAINER.SSL.MODE": "none"})
    trainer.build_data_loader()
    assert trainer.task == "closed"  # a Dassl fork's dataset has no task


def test_a_missing_unlabeled_set_is_named_with_the_fix(data):
    data("ossl", train_u=None)
    with pytest.raises(ValueError, match=r"^Method trains on unlabeled data, but SomeData has no train_u in this "
                                         r"setting; use TRAINER.SSL.MODE none$"):
        bare(**{"TRAINER.SSL.MODE": "fixmatch"}).build_data_loader()

    class OwnPseudoLabels(CLIPTrainer):
        use_unlabeled = True

    with pytest.raises(ValueError, match=r"^OwnPseudoLabels trains on unlabeled data, but SomeData has no train_u in "
                                         r"this setting$"):
        bare(OwnPseudoLabels, **{"TRAINER.SSL.MODE": "none"}).build_data_loader()


def test_fixmatch_and_amp_follow_their_keys():
    assert bare(**{"TRAINER.SSL.MODE": "fixmatch"}).uses_fixmatch and bare(**{"TRAINER.SSL.MODE": "fixmatch"}).use_unlabeled
    assert not bare(**{"TRAINER.SSL.MODE": "none"}).use_unlabeled
    for prec, expected in (("amp", True), ("fp16", True), ("fp32", False)):
        trainer = bare(**{"TRAINER.PREC": prec})
        assert not trainer.use_amp  # never on the CPU
        trainer.device = torch.device("cuda")
        assert trainer.use_amp == expected


def test_a_built_trainer_has_no_scaler_on_the_cpu(backbone, tmp_path):  # noqa: F811
    trainer = build(backbone, tmp_path, "LECoOp")
    assert trainer.scaler is None and trainer.evaluator.__class__.__name__ == "OpenSetClassification"


# ---------------------------------------------------------------- hooks and state
def recording(monkeypatch, cls, name, value=None):
    def record(self, *args):
        self.events.append((f"engine.{name}", *args))
        return value

    monkeypatch.setattr(cls, name, record)


def strategy(trainer):
    def note(what, value=None):
        return lambda *args: trainer.events.append((what, *args)) or value

    return SimpleNamespace(before_epoch=note("strategy.before_epoch"), after_epoch=note("strategy.after_epoch"),
                           state=note("strategy.state", {"pseudo": 1}), load_state=note("strategy.load_state"))


def test_the_strategys_epoch_hooks_run_inside_the_engines(monkeypatch):
    recording(monkeypatch, SimpleTrainer, "before_epoch")
    recording(monkeypatch, SimpleTrainer, "after_epoch")
    trainer = bare()
    trainer.unlabeled = strategy(trainer)
    trainer.before_epoch()
    trainer.after_epoch()
    assert trainer.events == [("engine.before_epoch",), ("strategy.before_epoch",), ("strategy.after_epoch",),
                              ("engine.after_epoch",)]


def test_before_train_builds_the_strategy_then_resumes_then_wraps_the_step(monkeypatch):
    recording(monkeypatch, SimpleTrainer, "before_train")
    trainer = bare()
    trainer.build_unlabeled = lambda: trainer.events.append("build_unlabeled") or "strategy"
    monkeypatch.setattr(distributed, "data_parallel_step",
                        lambda models, loss_fn: trainer.events.append(("ddp", models, loss_fn)) or "ddp_step")
    trainer.before_train()
    assert trainer.unlabeled == "strategy" and trainer.ddp_step == "ddp_step"
    assert trainer.events == ["build_unlabeled", ("engine.before_train",), ("ddp", {}, trainer.compute_loss)]


def test_the_checkpoints_carry_the_strategys_state(monkeypatch):
    recording(monkeypatch, SimpleTrainer, "trainer_state", {"rng": 7})
    recording(monkeypatch, SimpleTrainer, "load_trainer_state")
    trainer = bare()
    trainer.unlabeled = strategy(trainer)
    assert trainer.trainer_state() == {"rng": 7, "unlabeled": {"pseudo": 1}}
    state = {"rng": 7, "unlabeled": {"pseudo": 2}}
    trainer.load_trainer_state(state)
    assert trainer.events[-2:] == [("engine.load_trainer_state", state), ("strategy.load_state", {"pseudo": 2})]


def test_the_default_strategy_and_groups():
    trainer = bare(**{"TRAINER.SSL.MODE": "none"})
    assert type(trainer.build_unlabeled()) is ssl.Unlabeled
    trainer.cfg.TRAINER.SSL.MODE = "fixmatch"
    assert type(trainer.build_unlabeled()) is ssl.FixMatch
    assert trainer.fixmatch_heads() == {"main": {"global": "logits"}}
    assert trainer.output_groups("out") == {"main": "out"} and trainer.unlabeled_weights() == {"main": 1.0}


@pytest.mark.parametrize("keep_every, model_name, dropped", [(False, "", [(4, "dir")]), (True, "", []),
                                                             (False, "model-best.pth.tar", [])])
def test_saving_an_epoch_drops_the_earlier_ones_unless_kept(monkeypatch, keep_every, model_name, dropped):
    recording(monkeypatch, TrainerBase, "save_model")
    trainer = bare(**{"TRAIN.KEEP_EVERY_CHECKPOINT": keep_every})
    calls = []
    trainer.drop_earlier_checkpoints = lambda kept, directory: calls.append((kept, directory))
    trainer.save_model(3, "dir", False, None, model_name)
    assert trainer.events == [("engine.save_model", 3, "dir", False, None, model_name)] and calls == dropped
    monkeypatch.setattr(distributed, "is_main", lambda: False)  # the other ranks leave the files to rank 0
    calls.clear()
    trainer.save_model(3, "dir", False, None, model_name)
    assert calls == []


def test_dropping_removes_only_the_numbered_checkpoints_before_the_kept_epoch(tmp_path):
    trainer = bare()
    trainer.get_model_names = lambda: ["prompt", "head"]
    for name in ("prompt", "head"):
        (tmp_path / name).mkdir()
        for f in ("model.pth.tar-1", "model.pth.tar-2", "model.pth.tar-3", "model-best.pth.tar", "model-selected.pth.tar"):
            (tmp_path / name / f).write_text("x")
    trainer.drop_earlier_checkpoints(3, str(tmp_path))
    for name in ("prompt", "head"):
        assert sorted(p.name for p in (tmp_path / name).iterdir()) == [
            "model-best.pth.tar", "model-selected.pth.tar", "model.pth.tar-3"]


def test_resume_is_the_engines(monkeypatch):
    recording(monkeypatch, TrainerBase, "resume_model_if_exist", 5)
    trainer = bare()
    assert trainer.resume_model_if_exist("out") == 5 and trainer.events == [("engine.resume_model_if_exist", "out")]


def test_a_method_that_learns_nothing_only_evaluates(monkeypatch, capsys):
    recording(monkeypatch, SimpleTrainer, "train")

    class ZeroShot(CLIPTrainer):
        learns = False

    trainer = bare(ZeroShot)
    trainer.test = lambda: trainer.events.append("test")
    trainer.train()
    assert trainer.events == ["test"] and capsys.readouterr().out == "ZeroShot learns nothing: evaluating\n"
    trainer = bare()
    trainer.train()
    assert trainer.events == [("engine.train",)]


def test_visualize_says_this_trainer_has_none(capsys):
    bare().visualize("folder")
    assert capsys.readouterr().out == "--viz: trainer Method has no visualisation (CCD and CSA have)\n"


# ---------------------------------------------------------------- predict and test
def test_default_predict_is_the_softmax_and_its_max():
    trainer = bare()
    logits = torch.tensor([[1.0, 3.0, 0.0], [2.0, -1.0, 0.5]], dtype=torch.float64)
    trainer.forward_eval = lambda images, classes: {"logits": logits * images + classes}
    probs, score = trainer.predict(torch.tensor(2.0), torch.tensor(1.0))
    expected = torch.softmax((2 * logits + 1).float(), dim=1)
    assert probs.dtype == torch.float32 and torch.allclose(probs, expected)
    assert torch.equal(score, expected.max(dim=1).values)
    trainer.encode_classes = lambda: torch.tensor(1.0)
    assert torch.allclose(trainer.model_inference(torch.tensor(2.0)), expected)


def test_to_device_reads_the_image_unless_told():
    trainer = bare()
    batch = {"img": torch.ones(1), "label": torch.zeros(1)}
    assert trainer.to_device(batch) is batch["img"] and trainer.to_device(batch, "label") is batch["label"]
    trainer.device = torch.device("meta")  # another device: the batch moves there
    assert trainer.to_device(batch).device.type == "meta"


def test_an_empty_pass_is_named():
    trainer = bare()
    trainer.autocast = lambda: torch.autocast("cpu", enabled=False)
    trainer.set_model_mode = lambda mode: None
    with pytest.raises(ValueError, match=r"^Scoring: the loader has no batch \(SomeData, this rank's shard\)$"):
        trainer.score_pass([], lambda batch: batch, "Scoring")


class Loader(list):
    def __init__(self, batches):
        super().__init__(batches)
        self.dataset = [None] * sum(len(b["label"]) for b in batches)


class Evaluator:
    def __init__(self):
        self.processed = []

    def reset(self):
        self.processed.clear()

    def process(self, *args):
        self.processed.append(len(args))

    def evaluate(self):
        return {"accuracy": 80.0, "macro_f1": 70.0}


@pytest.mark.parametrize("task, split, args", [("closed", "val", 2), ("multilabel", "test", 3), ("closed", None, 2)])
def test_testing_reads_the_split_and_writes_each_result(task, split, args, capsys):
    trainer = bare(**{"TEST.SPLIT": "test"})
    trainer.task, trainer.evaluator, trainer.epoch = task, Evaluator(), 4
    trainer.val_loader = Loader([{"img": torch.ones(2, 1), "label": torch.tensor([0, 1])}])
    trainer.test_loader = Loader([{"img": torch.zeros(3, 1), "label": torch.tensor([0, 1, 1])}] * 2)
    trainer.encode_classes = lambda: None
    trainer.predict = lambda images, classes: (images.expand(-1, 2), images[:, 0] > 0)
    trainer.set_model_mode = lambda mode: None
    scalars = []
    trainer.write_scalar = lambda *args: scalars.append(args)
    assert trainer.test(split) == 80.0
    name = split or "test"
    assert scalars == [(f"{name}/accuracy", 80.0, 4), (f"{name}/macro_f1", 70.0, 4)]
    assert trainer.evaluator.processed == [args]
    n = 2 if split == "val" else 6
    assert f"=> evaluated {n} images in " in capsys.readouterr().out
    del trainer.epoch
    trainer.test(split)
    assert scalars[-1] == (f"{name}/macro_f1", 70.0, 0)


def test_testing_hands_a_methods_extra_outputs_of_the_same_pass_to_its_diagnostics():
    trainer = bare(**{"TEST.SPLIT": "test"})
    trainer.task, trainer.evaluator, trainer.epoch = "multilabel", Evaluator(), 4
    trainer.test_loader = Loader([{"img": torch.full((2, 1), float(b)), "label": torch.tensor([b, b])} for b in (1, 2)])
    trainer.encode_classes = lambda: None
    trainer.set_model_mode = lambda mode: None
    trainer.write_scalar = lambda *args: None
    passes = []
    trainer.eval_outputs = lambda images, classes: passes.append(1) or (images, images > 0, 10 * images, -images)
    seen = []
    trainer.evaluated = lambda split, labels, *extra: seen.append((split, labels.tolist(), [e.flatten().tolist() for e in extra]))
    assert trainer.test() == 80.0
    assert len(passes) == 2 and trainer.evaluator.processed == [3]
    assert seen == [("test", [1, 1, 2, 2], [[10.0, 10.0, 20.0, 20.0], [-1.0, -1.0, -2.0, -2.0]])]


def test_by_default_a_test_batch_is_predict_and_adds_no_diagnostics():
    trainer = bare()
    trainer.predict = lambda images, classes: ("probs", images, classes)
    assert trainer.eval_outputs("images", "classes") == ("probs", "images", "classes")
    assert trainer.evaluated("test", torch.zeros(2), torch.ones(2)) is None


# ---------------------------------------------------------------- under Dassl.pytorch
@pytest.fixture
def under_dassl(monkeypatch):
    """ENGINE "dassl": the save, resume and per-epoch reseed go through leclip.dassl_compat."""
    from leclip import dassl_compat

    monkeypatch.setattr(trainer_base, "ENGINE", "dassl")
    calls = []
    monkeypatch.setattr(dassl_compat, "save_with_trainer_state", lambda *args: calls.append(("save", *args)))
    monkeypatch.setattr(dassl_compat, "resume_with_trainer_state", lambda *args: calls.append(("resume", *args)) or 9)
    monkeypatch.setattr(trainer_base, "set_random_seed", lambda seed: calls.append(("seed", seed)))
    return calls


def engine_method(trainer, name):
    """The engine's method that CLIPTrainer's `name` wraps, bound to `trainer` (what super() gives)."""
    return getattr(super(CLIPTrainer, trainer), name)


def test_under_dassl_the_checkpoint_is_saved_with_the_trainer_state(monkeypatch, under_dassl):
    trainer = bare()
    trainer.drop_earlier_checkpoints = lambda kept, directory: under_dassl.append(("drop", kept, directory))
    trainer.save_model(2, "dir", True, "val", "")
    assert under_dassl == [("save", trainer, engine_method(trainer, "save_model"), 2, "dir", True, "val", ""),
                           ("drop", 3, "dir")]
    under_dassl.clear()
    assert trainer.resume_model_if_exist("out") == 9
    assert under_dassl == [("resume", trainer, engine_method(trainer, "resume_model_if_exist"), "out")]


@pytest.mark.parametrize("seed, used", [(5, 5), (0, 0), (-1, 0)])
def test_under_dassl_each_epoch_is_reseeded_as_the_builtin_engine_does(monkeypatch, under_dassl, seed, used):
    from leclip.data.seeding import epoch_seed

    recording(monkeypatch, SimpleTrainer, "before_epoch")
    trainer = bare(**{"SEED": seed})
    trainer.epoch, trainer.unlabeled = 3, strategy(trainer)
    trainer.dm = SimpleNamespace(set_epoch=lambda epoch, base: under_dassl.append(("set_epoch", epoch, base)))
    trainer.before_epoch()
    assert under_dassl == [("seed", epoch_seed(used, 3)), ("set_epoch", 3, used)]
    assert trainer.events == [("engine.before_epoch",), ("strategy.before_epoch",)]


# ---------------------------------------------------------------- defaults and the reference pass
def test_save_models_defaults_are_an_epoch_checkpoint(monkeypatch):
    recording(monkeypatch, TrainerBase, "save_model")
    trainer = bare(**{"TRAIN.KEEP_EVERY_CHECKPOINT": True})
    trainer.save_model(1, "dir")
    trainer.save_model(1, "dir", False, {"accuracy": 3.0})
    assert trainer.events == [("engine.save_model", 1, "dir", False, None, ""),
                              ("engine.save_model", 1, "dir", False, {"accuracy": 3.0}, "")]


def test_the_data_are_built_from_the_trainers_config(monkeypatch):
    trainer = bare(**{"TRAINER.SSL.MODE": "none"})
    monkeypatch.setattr(evaluators, "name_in_cfg", lambda task, cfg: None)
    seen = []

    class DM:
        def __init__(self, cfg, dataset):
            seen.append((cfg, dataset))

        def attach(self, t):
            t.dm, t.train_loader_u = SimpleNamespace(dataset=SimpleNamespace(task="ossl")), None

    monkeypatch.setattr(trainer_base, "DataManager", DM)
    monkeypatch.setattr(trainer_base, "build_dataset", lambda cfg: ("dataset of", cfg))
    trainer.build_data_loader()
    assert seen == [(trainer.cfg, ("dataset of", trainer.cfg))]


def test_the_reference_scores_are_the_labeled_images_id_scores_under_the_test_view():
    trainer = bare()
    calls = []
    trainer.dm = SimpleNamespace(dataset=SimpleNamespace(train_x="labeled"),
                                 make_loader=lambda data, views: calls.append(("loader", data, views)) or "loader")

    def score_pass(loader, fn, desc):
        calls.append(("pass", loader, desc))
        return fn({"img": "images"})

    trainer.score_pass = score_pass
    trainer.predict = lambda images, classes: (None, (images, classes))
    assert trainer.reference_scores("classes") == ("images", "classes")
    assert calls == [("loader", "labeled", "test"), ("pass", "loader", "Scoring the labeled images")]


# ---------------------------------------------------------------- CLIP, AMP and the scaler
def test_load_clip_freezes_the_named_clip_and_names_it_in_a_size_error(tmp_path):
    import leclip.datasets  # noqa: F401 (registers the embedded world's CLIP "synth-vit")

    trainer = bare(**{"MODEL.BACKBONE.NAME": "synth-vit", "MODEL.BACKBONE.PATH": "", "INPUT.SIZE": (64, 64),
                      "TRAINER.LOGIT_SCALE": "model"})
    model = trainer.load_clip()
    assert model.visual.input_resolution == 64 and not any(p.requires_grad for p in model.parameters())
    assert trainer.logit_scale == pytest.approx(model.logit_scale.exp().item())
    trainer.cfg.INPUT.SIZE = (32, 32)
    with pytest.raises(ValueError, match=r"^INPUT.SIZE=\(32, 32\) but the CLIP backbone 'synth-vit' takes 64x64"):
        trainer.load_clip()
    path = str(tmp_path / "clip.pt")
    torch.save({"state_dict": model.state_dict(), "meta": {}}, path)
    trainer.cfg.MODEL.BACKBONE.PATH = path
    with pytest.raises(ValueError, match=f"the CLIP backbone '{path}' takes 64x64"):
        trainer.load_clip()


@pytest.mark.filterwarnings("ignore:CUDA is not available")
@pytest.mark.parametrize("prec, amp", [("fp32", False), ("amp", True), ("fp16", True)])
def test_autocast_is_amp_only_on_cuda_under_amp(prec, amp):
    trainer = bare(**{"TRAINER.PREC": prec})
    assert not isinstance(trainer.autocast(), torch.autocast)  # the CPU: fp32
    trainer.device = torch.device("cuda")
    assert isinstance(trainer.autocast(), torch.autocast) == amp


@pytest.mark.parametrize("learns, prec, scaled", [(True, "amp", True), (False, "amp", False), (True, "fp32", False)])
def test_the_scaler_exists_on_cuda_under_amp_for_a_method_that_learns(monkeypatch, learns, prec, scaled):
    def engine_init(self, cfg):
        self.cfg, self.device, self.task, self.lab2cname, self.evaluator = cfg, torch.device("cuda"), "ossl", {}, None

    monkeypatch.setattr(SimpleTrainer, "__init__", engine_init)
    cls = type("Learner", (CLIPTrainer,), {"learns": learns})
    trainer = object.__new__(cls)
    cfg = get_cfg_default()
    cfg.TRAINER.PREC = prec
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # GradScaler warns when the machine has no CUDA
        CLIPTrainer.__init__(trainer, cfg)
    assert isinstance(trainer.scaler, torch.amp.GradScaler) == scaled
    if scaled:
        assert trainer.scaler._device == "cuda"
