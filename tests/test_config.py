"""Config keys: each one the code accepts is read, or rejected with a message when set;
values that would silently fall back to a default are errors."""
import pytest
from yacs.config import CfgNode as CN

from leclip import catalogue, config
from leclip.dassl import DEFAULT_CFG, check_cfg_values, get_cfg_default


def flat_keys(node, prefix=""):
    for key, value in node.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, CN):
            yield from flat_keys(value, dotted + ".")
        else:
            yield dotted


def set_key(cfg, dotted, value):
    node = cfg
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = node[part]
    node[leaf] = value


def other_value(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 3
    if isinstance(value, str):
        return value + "x"
    return tuple(value) + ("x",)


@pytest.mark.parametrize("dotted", sorted(config.IGNORED_KEYS))
def test_a_key_the_trainers_ignore_is_an_error_when_set(dotted):
    cfg = get_cfg_default()
    config.check_config(cfg)  # the defaults pass
    set_key(cfg, dotted, other_value(config.value_of(cfg, dotted)))
    with pytest.raises(ValueError, match=f"{dotted}=.* is not used by LE-CLIP's trainers"):
        config.check_config(cfg)


def test_input_transforms_may_only_name_the_weak_view():
    cfg = get_cfg_default()
    cfg.INPUT.TRANSFORMS = ("random_resized_crop", "random_flip", "normalize")  # CoOp's configs
    config.check_config(cfg)
    cfg.INPUT.TRANSFORMS = ("random_flip", "colorjitter", "normalize")
    with pytest.raises(ValueError, match="INPUT.TRANSFORMS=.*DATALOADER.TRAIN_X.VIEWS"):
        config.check_config(cfg)


@pytest.mark.parametrize("dotted", sorted(config.CHOICES))
def test_a_value_outside_the_choices_is_an_error(dotted):
    cfg = get_cfg_default()
    set_key(cfg, dotted, "bogus")
    with pytest.raises(ValueError, match=f"{dotted}='bogus': use one of"):
        config.check_config(cfg)


def test_fixmatch_needs_a_weak_and_a_strong_unlabeled_view():
    cfg = get_cfg_default()
    cfg.TRAINER.SSL.MODE = "fixmatch"
    cfg.DATALOADER.TRAIN_U.VIEWS = ["synth_weak", "synth_strong"]  # any two named views, weak first
    config.check_config(cfg)
    cfg.DATALOADER.TRAIN_U.VIEWS = ["weak"]
    with pytest.raises(ValueError, match=r"DATALOADER.TRAIN_U.VIEWS=\['weak'\]: FixMatch reads two views"):
        config.check_config(cfg)
    cfg.TRAINER.SSL.MODE = "none"  # without FixMatch one view is enough
    config.check_config(cfg)


@pytest.mark.parametrize("dotted", config.UNIT_INTERVAL)
def test_quantiles_and_thresholds_lie_in_the_unit_interval(dotted):
    cfg = get_cfg_default()
    set_key(cfg, dotted, 1.5)
    with pytest.raises(ValueError, match=f"{dotted}=1.5: use a value in"):
        config.check_config(cfg)


@pytest.mark.parametrize(
    "dotted, value, message",
    [
        ("TEST.FINAL_MODEL", "best_vall", r"TEST.FINAL_MODEL='best_vall': use one of \('last_step', 'best_val'\)"),
        ("TEST.SPLIT", "valid", r"TEST.SPLIT='valid'"),
        ("TRAIN.COUNT_ITER", "train_xu", r"TRAIN.COUNT_ITER='train_xu'"),
        ("DATALOADER.TRAIN_X.SAMPLER", "RandomDomainSampler", "RandomDomainSampler"),
        ("DATALOADER.TRAIN_X.BATCH_SIZE", 0, "DATALOADER.TRAIN_X.BATCH_SIZE=0: use a positive integer"),
        ("DATALOADER.TEST.BATCH_SIZE", -4, "DATALOADER.TEST.BATCH_SIZE=-4: use a positive integer"),
    ],
)
def test_loop_values_that_would_fall_back_silently_are_errors(dotted, value, message):
    cfg = get_cfg_default()
    check_cfg_values(cfg)
    set_key(cfg, dotted, value)
    with pytest.raises(ValueError, match=message):
        check_cfg_values(cfg)


def test_a_typo_value_stops_the_run_before_training(run_trainer):
    with pytest.raises(ValueError, match="TEST.FINAL_MODEL='best_vall'"):
        run_trainer("LECoOp", "configs/trainers/LECoOp/synth.yaml", ["TEST.FINAL_MODEL", "best_vall"])


def test_a_dataset_rejects_the_other_tasks_setting(run_trainer):
    with pytest.raises(ValueError, match="DATASET.LABELED_RATIO=0.1 is not used here"):
        run_trainer("LECoOp", "configs/trainers/LECoOp/synth.yaml", ["DATASET.LABELED_RATIO", "0.1"])


def test_a_method_on_a_task_it_does_not_serve_is_an_error(run_trainer):
    with pytest.raises(ValueError, match="LECoOp does not serve SynthML's task"):
        run_trainer("LECoOp", "configs/trainers/LECoOp/synth.yaml", dataset="synth_ml", setting="0.1")


def test_every_declared_key_exists_in_the_defaults():
    keys = set(flat_keys(DEFAULT_CFG))
    assert set(config.IGNORED_KEYS) <= keys and set(config.CHOICES) <= keys
    assert {"TRAINER.LOGIT_SCALE", "TRAINER.SSL.FILTER_LIFETIME", "DATASET.ID_RATIO"} <= keys
    assert catalogue.setup_cfg().TRAINER.LOGIT_SCALE == "model"
