"""CCD's trainer on a tiny embedded world: the cached CLIP labels and their key, the
label update's wiring, the baselines' switches, and the bad-input messages."""
import os

import pytest
import torch

from leclip import catalogue
from leclip.dassl import build_trainer
from leclip.multilabel import clip_labels
from leclip.trainers import ccd

CONFIG = "configs/trainers/CCD/synth.yaml"
TINY = [
    "DATASET.SYNTH.POOL_PER_CLASS", "2", "DATASET.SYNTH.TEST_PER_CLASS", "1",
    "TRAINER.CCD.INPUT_SIZE", "32", "OPTIM.MAX_EPOCH", "1",
]


def make_trainer(tmp_path, synth_root, *opts):
    cfg = catalogue.setup_cfg(
        catalogue.trainer_config("ccd", "synth_ml"),
        catalogue.dataset_config("synth_ml"),
        ["DATASET.SETTING", "unsup"] + TINY + list(opts),
        root=synth_root,
        output_dir=str(tmp_path / "out"),
        seed=1,
        trainer="CCD",
    )
    return build_trainer(cfg)


def test_clip_labels_are_cached_under_their_key(tmp_path, synth_root, monkeypatch):
    cache = str(tmp_path / "cache")
    trainer = make_trainer(tmp_path, synth_root, "TRAINER.CCD.CACHE_DIR", cache)
    calls = []
    compute = trainer.score_pass
    monkeypatch.setattr(trainer, "score_pass", lambda loader, fn, desc: calls.append(desc) or compute(loader, fn, desc))
    first = trainer.clip_labels("global")
    again = trainer.clip_labels("global")
    assert calls == ["CLIP global labels"] and torch.equal(first, again)  # computed once, then read back
    # they are CLIP's softmax(100 cos) over the classes of every training image
    assert first.shape == (len(trainer.dm.dataset.train_u), trainer.num_classes)
    assert torch.allclose(first.sum(dim=1), torch.ones(len(first)), atol=1e-5)
    trainer.cfg.defrost()
    trainer.cfg.DATASET.PROMPT_TEMPLATE = "a picture of the {}."  # another template: another key
    trainer.clip_labels("global")
    assert len(calls) == 2
    trainer.clip_labels("cdul")  # another kind of labels: another entry, never the global ones
    trainer.cfg.TRAINER.CCD.CLIP_SCALE = 50.0  # another softmax scale: another key
    trainer.clip_labels("global")
    assert calls[2:] == ["CLIP cdul labels", "CLIP global labels"]
    names = sorted(p.name.split("-")[0] for p in (tmp_path / "cache").iterdir())
    assert names == ["cdul", "global", "global", "global"]


def test_clip_labels_are_cached_beside_the_data_by_default(tmp_path, synth_root):
    trainer = make_trainer(tmp_path, synth_root)
    trainer.clip_labels("global")
    folder = os.path.join(synth_root, "leclip_cache", "ccd")
    assert any(name.startswith("global-") for name in os.listdir(folder))


def test_initial_targets_are_the_debiased_clip_labels(tmp_path, synth_root):
    trainer = make_trainer(tmp_path, synth_root, "TRAINER.CCD.CACHE_DIR", str(tmp_path / "cache"))
    targets, weights, source_bias = ccd.LABEL_SOURCES["clip"](trainer)
    probs = trainer.clip_labels("global")
    reliable = ~clip_labels.unreliable(probs, 2.0)
    bias = clip_labels.class_bias(probs, reliable)
    assert torch.allclose(source_bias, bias)
    assert torch.allclose(targets, (probs.clamp_min(1 / 20) / bias).clamp(0, 1))
    assert torch.equal(weights, torch.ones(len(probs)))


@pytest.mark.parametrize(
    "opts, message",
    [
        (["TRAINER.CCD.LOSS", "an"], "single-positive losses"),
        (["TRAINER.CCD.LABELS", "cdul"], "set UPDATE, DEBIAS and CONSISTENCY False"),
        (["TRAINER.CCD.BACKBONE", "resnet1000"], "resnet1000"),
        (["TRAINER.CCD.WEIGHTS", "/nonexistent/r18.pth"], "/nonexistent/r18.pth"),
        (["DATALOADER.TRAIN_U.VIEWS", "['weak']"], "CCD trains on its two views"),
        (["TRAINER.CCD.JITTER", "(0.5, 0.5, 0.5, 0.7)"], r"JITTER=.*hue <= 0.5"),
        (["TRAINER.CCD.JITTER", "(0.5, 0.5)"], r"give \(brightness, contrast, saturation, hue\)"),
        (["TRAINER.CCD.WEIGHTS", "embedded", "TRAINER.CCD.BACKBONE", "resnet18"], "No embedded world-pretrained"),
    ],
)
def test_bad_ccd_input_is_one_message(tmp_path, synth_root, opts, message):
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        make_trainer(tmp_path, synth_root, *opts)


def test_ccd_refuses_a_labeled_ratio(tmp_path, synth_root):
    cfg = catalogue.setup_cfg(
        CONFIG and catalogue.trainer_config("ccd", "synth_ml"), catalogue.dataset_config("synth_ml"),
        ["DATASET.LABELED_RATIO", "0.1"] + TINY, root=synth_root, output_dir=str(tmp_path / "o"), seed=1, trainer="CCD",
    )
    with pytest.raises(ValueError, match=r"CCD does not serve SynthML's task \(C .*it serves task B"):
        build_trainer(cfg)


def test_the_second_view_jitters_colour_as_configured(synth_root, tmp_path):
    import torchvision.transforms as T

    def cfg_of(dataset, *opts):
        return catalogue.setup_cfg(
            catalogue.trainer_config("ccd", dataset), catalogue.dataset_config(dataset),
            ["DATASET.SETTING", "unsup"] + list(opts), root=synth_root, output_dir=str(tmp_path), seed=1, trainer="CCD",
        )

    def jitter_of(*opts):
        (op,) = [t for t in ccd._view(cfg_of("synth_ml", *opts), train=True, jitter=True).transforms
                 if isinstance(t, T.ColorJitter)]
        return op.brightness, op.hue

    assert jitter_of() == ((0.5, 1.5), None)  # the world's recipe keeps the hue, which names its classes
    assert cfg_of("voc2007").TRAINER.CCD.JITTER == (0.5, 0.5, 0.5, 0.5)  # the real recipes jitter the hue, as released
    assert jitter_of("TRAINER.CCD.JITTER", "(0.5, 0.5, 0.5, 0.5)") == ((0.5, 1.5), (-0.5, 0.5))  # as released
    assert jitter_of("TRAINER.CCD.JITTER", "(0.2, 0.5, 0.5, 0.0)") == ((0.8, 1.2), None)


def test_the_rule_may_pick_only_epochs_on_updated_labels_when_asked(tmp_path, synth_root):
    first = [
        make_trainer(tmp_path / str(k), synth_root, *opts).first_selectable()
        for k, opts in enumerate([
            ["TRAINER.CCD.SELECT_AFTER_UPDATE", "False"],
            ["TRAINER.CCD.SELECT_AFTER_UPDATE", "True", "TRAINER.CCD.WARMUP_EPOCHS", "3"],
            ["TRAINER.CCD.SELECT_AFTER_UPDATE", "True", "TRAINER.CCD.UPDATE", "False"],
        ])
    ]
    assert first == [2, 5, 2]  # released; two epochs after the update (epoch index 3); no update


# ---- wiring: compute_loss is the hand composition of the tested parts ---------------------

def one_step(tmp_path, synth_root, *opts, epoch=None):
    """(trainer, batch, compute_loss's terms) of one training batch at `epoch` (default:
    the first epoch of the update, where the consistency term is on)."""
    trainer = make_trainer(tmp_path, synth_root, "TRAINER.CCD.CACHE_DIR", str(tmp_path.parent / "cache"), *opts)
    trainer.before_train()
    trainer.epoch = trainer.cfg.TRAINER.CCD.WARMUP_EPOCHS if epoch is None else epoch
    trainer.before_epoch()  # a no-op update at epoch 0 ... WARMUP_EPOCHS - 1; the update at WARMUP_EPOCHS
    trainer.set_model_mode("train")
    batch = next(iter(trainer.train_loader_u))
    torch.manual_seed(0)
    terms = trainer.compute_loss(None, batch)
    return trainer, batch, terms


def hand_logits(trainer, batch, view):
    return trainer.classifier(batch[f"img_{view}"]).float()


def test_compute_loss_is_bce_on_the_tables_rows_plus_the_weighted_consistency(tmp_path, synth_root):
    from leclip.multilabel import losses

    opts = ["TRAINER.CCD.CONSISTENCY_WEIGHT", "2.5", "TRAINER.CCD.UNRELIABLE_WEIGHT", "0.25",
            "TRAINER.CCD.MAX_ENTROPY", "1.0", "TRAINER.CCD.UPDATE", "False"]
    trainer, batch, terms = one_step(tmp_path / "a", synth_root, *opts)
    index = batch["index"]
    weights = trainer.table.weights[index]
    assert set(weights.tolist()) == {0.25, 1.0}  # reliable and unreliable images in the batch
    one, two = hand_logits(trainer, batch, "ccd_train"), hand_logits(trainer, batch, "ccd_jitter")
    assert not torch.allclose(one, two)  # two views, not one view twice
    assert set(terms) == {"loss_bce", "loss_consistency"}
    assert torch.allclose(terms["loss_bce"], losses.soft_bce(one, trainer.table.targets[index], weights))
    assert torch.allclose(terms["loss_consistency"], 2.5 * losses.consistency_loss(one, two))
    # each weight scales its own term only
    _, _, plain = one_step(tmp_path / "b", synth_root, "TRAINER.CCD.UPDATE", "False", "TRAINER.CCD.MAX_ENTROPY", "1.0")
    assert torch.allclose(terms["loss_consistency"], 2.5 * plain["loss_consistency"])
    assert not torch.allclose(terms["loss_bce"], plain["loss_bce"])
    _, _, consistency_only = one_step(tmp_path / "c", synth_root, "TRAINER.CCD.CONSISTENCY_WEIGHT", "2.5",
                                      "TRAINER.CCD.UPDATE", "False", "TRAINER.CCD.MAX_ENTROPY", "1.0")
    assert torch.allclose(consistency_only["loss_bce"], plain["loss_bce"])
    # before the update's epoch: no consistency term
    _, _, warmup = one_step(tmp_path / "d", synth_root, *opts, epoch=0)
    assert set(warmup) == {"loss_bce"}


@pytest.mark.parametrize("loss, opts", [
    ("an", []), ("an_ls", ["TRAINER.CCD.AN_SMOOTHING", "0.3"]), ("role", ["TRAINER.CCD.ROLE_EXPECTED_POSITIVES", "3.0"])])
def test_single_positive_losses_read_clips_top1_class(tmp_path, synth_root, loss, opts):
    from leclip.multilabel import losses

    base = ["TRAINER.CCD.LABELS", "top1", "TRAINER.CCD.LOSS", loss, "TRAINER.CCD.UPDATE", "False",
            "TRAINER.CCD.DEBIAS", "False", "TRAINER.CCD.CONSISTENCY", "False"]
    trainer, batch, terms = one_step(tmp_path, synth_root, *base, *opts)
    index = batch["index"]
    positives = clip_labels.single_positive(trainer.clip_labels("global"))[index]
    assert torch.equal(trainer.table.targets[index], positives)
    logits = hand_logits(trainer, batch, "ccd_train")
    expected = {
        "an": lambda: losses.assume_negative_loss(logits, positives),
        "an_ls": lambda: losses.assume_negative_ls_loss(logits, positives, 0.3),
        "role": lambda: losses.role_loss(logits, trainer.estimator(index), positives, 3.0),
    }[loss]()
    assert set(terms) == {f"loss_{loss}"} and torch.allclose(terms[f"loss_{loss}"], expected)


def test_predict_is_the_classifiers_sigmoid_at_one_half(tmp_path, synth_root):
    trainer = make_trainer(tmp_path, synth_root)
    trainer.set_model_mode("eval")
    images = torch.randn(3, 3, 32, 32)
    scores, positives = trainer.predict(images, trainer.encode_classes())
    assert torch.allclose(scores, trainer.classifier(images).sigmoid()) and torch.equal(positives, scores >= 0.5)


def test_no_reliable_image_names_the_setting_to_change(tmp_path, synth_root):
    trainer = make_trainer(tmp_path, synth_root, "TRAINER.CCD.MAX_ENTROPY", "0.0", "TRAINER.CCD.CACHE_DIR",
                           str(tmp_path / "cache"))
    with pytest.raises(ValueError, match="MAX_ENTROPY=0: raise it or set TRAINER.CCD.DEBIAS False"):
        ccd.LABEL_SOURCES["clip"](trainer)


RELEASED = {  # the release's pipeline (github.com/k0u-id/CCD, its VOC2012 script and code)
    "MODEL.BACKBONE.NAME": "RN50x64", "TRAINER.CCD.CLIP_VIEW": "squash", "TRAINER.CCD.CLIP_SIZE": 640,
    "TRAINER.CCD.CLIP_NORM": "imagenet", "TRAINER.CCD.CLIP_SCALE": 100.0, "TRAINER.CCD.BOX_RULE": "released",
    "TRAINER.CCD.CALIBRATION": "walk", "TRAINER.CCD.CROPS": "aspect", "TRAINER.CCD.CROP_LONG_SIDE": 640,
    "TRAINER.CCD.LABEL_PASS_SIZE": 640, "TRAINER.CCD.BACKBONE": "resnet50", "TRAINER.CCD.WEIGHTS": "IMAGENET1K_V1",
    "TRAINER.CCD.TEMPLATE_PERIOD": False, "OPTIM.NAME": "adam", "OPTIM.LR": 1e-5,
    "TRAINER.CCD.HEAD_LR_MULT": 10.0, "OPTIM.WEIGHT_DECAY": 0.0, "DATALOADER.TRAIN_U.BATCH_SIZE": 16,
    "OPTIM.MAX_EPOCH": 10, "TRAINER.CCD.INPUT_SIZE": 448, "TRAINER.CCD.BOUND": 4, "TRAINER.CCD.LS_COEFF": 20.0,
    "TRAINER.CCD.MAX_ENTROPY": 2.0, "TRAINER.CCD.BOX_GROW": 80.0, "TRAINER.CCD.WARMUP_EPOCHS": 2,
}


@pytest.mark.parametrize("dataset", ["voc2007", "voc2012", "coco", "nuswide"])
def test_the_real_recipes_are_the_released_pipeline_at_a_constant_lr(dataset, tmp_path):
    import os.path as osp

    from leclip.dassl import build_lr_scheduler

    path = osp.join(catalogue.CONFIGS, "trainers", "CCD", f"{dataset}.yaml")
    assert catalogue.trainer_config("ccd", dataset) == path  # the harness takes it
    cfg = catalogue.setup_cfg(path, catalogue.dataset_config(dataset), catalogue.setting_opts(dataset, "unsup"),
                            root=str(tmp_path), output_dir=str(tmp_path / "o"), seed=1, trainer="CCD")
    for dotted, value in RELEASED.items():
        node = cfg
        for part in dotted.split("."):
            node = node[part]
        assert node == value, dotted
    optim = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=cfg.OPTIM.LR)
    sched = build_lr_scheduler(optim, cfg.OPTIM)
    for _ in range(cfg.OPTIM.MAX_EPOCH):
        optim.step()
        sched.step()
    assert optim.param_groups[0]["lr"] == 1e-5  # constant, as released


def test_the_released_geometry_runs_end_to_end_on_the_embedded_world(run_trainer, monkeypatch):
    """Every released key at once, at the world's scale (640 / 448 x its 64 px: 91 px), with
    the update in the first epoch: CLIP at 91 px, aspect crops, the walk."""
    from leclip.multilabel import any_size, cam

    sizes, walks = [], []
    encode = any_size.encode_any_size
    monkeypatch.setattr(ccd, "encode_any_size", lambda m, x: sizes.append(tuple(x.shape[-2:])) or encode(m, x))
    walk = cam.calibrate_threshold_walk
    monkeypatch.setattr(cam, "calibrate_threshold_walk", lambda *a, **k: walks.append(1) or walk(*a, **k))
    released = ["TRAINER.CCD.CLIP_VIEW", "squash", "TRAINER.CCD.CLIP_SIZE", "91", "TRAINER.CCD.CLIP_NORM", "imagenet",
                "TRAINER.CCD.LABEL_PASS_SIZE", "91", "TRAINER.CCD.CALIBRATION", "walk", "TRAINER.CCD.CROPS", "aspect",
                "TRAINER.CCD.CROP_LONG_SIDE", "91", "TRAINER.CCD.BOX_RULE", "released",
                "TRAINER.CCD.TEMPLATE_PERIOD", "False", "TRAINER.CCD.WARMUP_EPOCHS", "0"]
    results = run_trainer("CCD", CONFIG, TINY + released + ["TRAINER.CCD.INPUT_SIZE", "64"], dataset="synth_ml",
                          setting="unsup")
    assert (91, 91) in sizes and any(max(s) == 91 and min(s) < 91 for s in sizes)  # the squash; an aspect crop
    assert walks and results["labels_final_mAP"] != results["labels_initial_mAP"]


# ---- kill and resume: the label table travels inside the epoch checkpoint ----------------

@pytest.mark.parametrize("engine", ["builtin", "dassl"])
def test_ccd_resumes_exactly_after_a_kill(tmp_path, synth_root, engine):
    """Update at epoch 2, checkpoints every 2 epochs: killed after epoch 2's update (before
    any checkpoint), after epoch 3 (its labels and history newer than the epoch-2
    checkpoint: the old side file's bug), and in the middle of epoch 4; each resumed run
    ends as the uninterrupted one (weights, label table, selection, results)."""
    from kill_resume import check_kill_resume

    opts = TINY[:-2] + ["OPTIM.MAX_EPOCH", "4", "TRAINER.CCD.WARMUP_EPOCHS", "1", "TRAIN.CHECKPOINT_FREQ", "2",
                        "TRAINER.CCD.SELECT_AFTER_UPDATE", "False", "TRAINER.CCD.CACHE_DIR", str(tmp_path / "cache")]
    models, results = check_kill_resume(tmp_path, synth_root, engine, "CCD", CONFIG, opts, "synth_ml", "unsup",
                                        kills=[(2, "start"), (3, "end"), (4, 2)])
    table = models["classifier"][2]["unlabeled"]
    assert len(table["history"]) == 4 and results["labels_final_mAP"] != results["labels_initial_mAP"]


def test_the_template_keeps_its_period_unless_asked_as_released(tmp_path, synth_root):
    kept = make_trainer(tmp_path / "a", synth_root)
    assert kept.template() == kept.cfg.DATASET.PROMPT_TEMPLATE == "a photo of a {}."  # the world's template
    trainer = make_trainer(tmp_path / "b", synth_root, "TRAINER.CCD.TEMPLATE_PERIOD", "False")
    assert trainer.template() == "a photo of a {}"
    from leclip.backbone import class_text_features

    expected = class_text_features(trainer.clip_model, trainer.classnames, "a photo of a {}", trainer.device)
    assert torch.equal(trainer.text_features, expected)
