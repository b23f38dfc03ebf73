"""CCD's trainer on a tiny embedded world: the cached CLIP labels and their key, the
label update's wiring, the baselines' switches, and the bad-input messages."""
import pytest
import torch

from leclip import catalogue
from leclip.dassl import build_trainer
from leclip.multilabel import clip_labels

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
    compute = trainer.compute_clip_labels
    monkeypatch.setattr(trainer, "compute_clip_labels", lambda kind: calls.append(kind) or compute(kind))
    first = trainer.cached_clip_labels("global")
    again = trainer.cached_clip_labels("global")
    assert calls == ["global"] and torch.equal(first, again)  # computed once, then read back
    # they are CLIP's softmax(100 cos) over the classes of every training image
    assert first.shape == (len(trainer.dm.dataset.train_u), trainer.num_classes)
    assert torch.allclose(first.sum(dim=1), torch.ones(len(first)), atol=1e-5)
    trainer.cfg.defrost()
    trainer.cfg.DATASET.PROMPT_TEMPLATE = "a picture of the {}."  # another template: another key
    trainer.cached_clip_labels("global")
    assert calls == ["global", "global"]


def test_initial_targets_are_the_debiased_clip_labels(tmp_path, synth_root):
    trainer = make_trainer(tmp_path, synth_root, "TRAINER.CCD.CACHE_DIR", str(tmp_path / "cache"))
    targets, weights = trainer.initial_targets()
    probs = trainer.cached_clip_labels("global")
    reliable = ~clip_labels.unreliable(probs, 2.0)
    bias = clip_labels.class_bias(probs, reliable)
    assert torch.allclose(trainer.bias, bias)
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
    with pytest.raises(ValueError, match="CCD is unsupervised"):
        build_trainer(cfg)


def test_the_second_view_jitters_colour_as_configured(synth_root, tmp_path):
    import torchvision.transforms as T
    from leclip.trainers import ccd

    def jitter_of(*opts):
        cfg = catalogue.setup_cfg(
            catalogue.trainer_config("ccd", "synth_ml"), catalogue.dataset_config("synth_ml"),
            ["DATASET.SETTING", "unsup"] + list(opts), root=synth_root, output_dir=str(tmp_path), seed=1, trainer="CCD",
        )
        (op,) = [t for t in ccd._classifier_view(cfg, train=True, jitter=True).transforms if isinstance(t, T.ColorJitter)]
        return op.brightness, op.hue

    assert jitter_of() == ((0.5, 1.5), (-0.5, 0.5))  # as released
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
