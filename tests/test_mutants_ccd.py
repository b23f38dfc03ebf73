"""CCD's trainer hooks against a hand composition of its tested parts, on the tiny embedded
world of test_ccd.py (what mutmut's survivors showed untested outside the end-to-end
runs): the label update (CAM candidates, the calibrated class selection, the crops through
CLIP, each key reaching its part), the label-free rule's epoch end, the final and
selected models' results, and reading the selected checkpoint back."""
import os

import pytest
import torch

from leclip.dassl import get_cfg_default
from leclip.engine.trainer import SimpleTrainer
from leclip.multilabel import cam, clip_labels, label_update, losses
from leclip.trainers import ccd
from test_ccd import make_trainer

ALL_AT_ONCE = ["DATALOADER.TEST.BATCH_SIZE", "256"]
SMALL_BATCHES = ["DATALOADER.TEST.BATCH_SIZE", "3"]


def ready(tmp_path, synth_root, *opts):
    """A built CCD trainer with its label table (CLIP's labels cached under tmp_path)."""
    trainer = make_trainer(tmp_path, synth_root, "TRAINER.CCD.CACHE_DIR", str(tmp_path / "cache"), *opts)
    trainer.before_train()
    return trainer


def all_images(trainer):
    loader = trainer.dm.make_loader(trainer.dm.dataset.train_u, views=("ccd_label", "ccd_crops"), batch_size=10_000)
    return next(iter(loader))


def test_label_pass_size_is_the_key_or_the_input_size(tmp_path, synth_root):
    cfg = make_trainer(tmp_path, synth_root).cfg
    assert ccd.label_pass_size(cfg) == 32  # INPUT_SIZE of the tiny recipe
    cfg.defrost()
    cfg.TRAINER.CCD.LABEL_PASS_SIZE = 48
    assert ccd.label_pass_size(cfg) == 48


def test_cam_candidates_pass_the_runs_keys(tmp_path, synth_root):
    keys = ["TRAINER.CCD.LABEL_PASS_SIZE", "48", "TRAINER.CCD.CAM_THRESHOLD", "0.7", "TRAINER.CCD.BOX_RULE", "released",
            "TRAINER.CCD.BOX_GROW", "30.0"]
    trainer = make_trainer(tmp_path, synth_root, *keys)
    trainer.set_model_mode("eval")
    images = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        got = trainer.cam_candidates(images, return_maps=True)
        expected = label_update.cam_candidates(trainer.classifier, images, (48, 48), 0.7, "released", 30.0,
                                               return_maps=True)
        default = label_update.cam_candidates(trainer.classifier, images, (48, 48), return_maps=True)
    assert len(got) == 3 and all(torch.equal(a, b) for a, b in zip(got, expected))
    assert not torch.equal(got[1], default[1])  # the keys changed the boxes
    assert len(trainer.cam_candidates(images)) == 2


@pytest.mark.parametrize("calibration", ["all", "walk"])
def test_the_class_selection_is_the_calibrated_threshold_on_every_image(tmp_path, synth_root, calibration, capsys):
    trainer = make_trainer(tmp_path, synth_root, "TRAINER.CCD.CALIBRATION", calibration, "TRAINER.CCD.BOUND", "2",
                           *SMALL_BATCHES)
    loader = trainer.dm.make_loader(trainer.dm.dataset.train_u, views=("ccd_label",))
    scores, boxes, selected = trainer.cam_selection(loader, "a test")
    trainer.set_model_mode("eval")
    with torch.no_grad():
        hand_scores, hand_boxes = trainer.cam_candidates(all_images(trainer)["img_ccd_label"])
    assert torch.allclose(scores, hand_scores, atol=1e-6) and torch.allclose(boxes, hand_boxes, atol=1e-4)
    if calibration == "walk":
        threshold, count = cam.calibrate_threshold_walk(scores, 2, generator=torch.Generator().manual_seed(trainer.seed))
    else:
        threshold, count = cam.calibrate_threshold(scores, 2)
    assert torch.equal(selected, scores >= threshold) and selected.any()
    out = capsys.readouterr().out
    assert f"CCD a test: class threshold {threshold:.3f} selects {count:.2f} classes per image" in out
    assert "\nCCD CAM boxes: " in out  # the pass's progress line


@pytest.mark.parametrize("opts, batches", [
    (["TRAINER.CCD.CROPS_PER_CLASS", "1", "TRAINER.CCD.CROPS", "aspect", "TRAINER.CCD.CROP_LONG_SIDE", "40"],
     SMALL_BATCHES),  # batched like the whole set at once (no jitter draws)
    (["TRAINER.CCD.CROPS_PER_CLASS", "2", "TRAINER.CCD.CROP_JITTER", "0.3", "TRAINER.CCD.CLAMP_LOCAL", "True"],
     ALL_AT_ONCE),
])
def test_the_update_is_the_crops_through_clip_of_the_selected_classes(tmp_path, synth_root, opts, batches):
    keys = ["TRAINER.CCD.RATIO", "0.4", "TRAINER.CCD.LS_COEFF", "8.0", "TRAINER.CCD.CLIP_SCALE", "50.0",
            "TRAINER.CCD.BOUND", "1", "TRAINER.CCD.CAM_THRESHOLD", "0.6"]
    trainer = ready(tmp_path, synth_root, *keys, *opts, *batches)
    c = trainer.cfg.TRAINER.CCD
    old = trainer.table.targets.clone()
    trainer.update_labels()
    batch = all_images(trainer)
    trainer.set_model_mode("eval")
    with torch.no_grad():
        scores, boxes = trainer.cam_candidates(batch["img_ccd_label"])
        threshold, _ = cam.calibrate_threshold(scores, 1)
        image_index, class_index = (scores >= threshold).nonzero(as_tuple=True)
        expected = label_update.crops_update(
            batch["img_ccd_crops"], boxes[image_index, class_index], image_index, trainer.encode,
            trainer.text_features, old[batch["index"]], trainer.table.bias, 0.4, 8.0, c.CLAMP_LOCAL,
            c.CROPS_PER_CLASS, c.CROP_JITTER, torch.Generator().manual_seed(trainer.seed), crop_size=tuple(trainer.cfg.INPUT.SIZE),
            logit_scale=50.0, long_side=40 if c.CROPS == "aspect" else None).labels
    assert len(image_index) > 0
    assert torch.allclose(trainer.table.targets[batch["index"]], expected, atol=1e-5)
    assert not torch.allclose(trainer.table.targets, old)


def test_the_update_runs_once_at_the_end_of_the_warm_up(tmp_path, synth_root, capsys):
    trainer = ready(tmp_path, synth_root, "TRAINER.CCD.WARMUP_EPOCHS", "1")
    updates = []
    trainer.update_labels = lambda: updates.append(trainer.epoch)
    for trainer.epoch in range(3):
        trainer.before_epoch()
        assert trainer.epoch_scores == [] and trainer.epoch_index == []
    assert updates == [1]
    assert "pseudo-labels (after the CAM-guided update): mAP" in capsys.readouterr().out


# ---------------------------------------------------------------- epoch end and results
def test_the_epoch_end_scores_the_trained_images_in_index_order(tmp_path, synth_root, monkeypatch, capsys):
    trainer = ready(tmp_path, synth_root)
    n, k = trainer.table.targets.shape
    events = []
    monkeypatch.setattr(SimpleTrainer, "after_epoch", lambda self: events.append("engine.after_epoch"))
    trainer.save_model = lambda epoch, directory, model_name="": events.append(("save", epoch, directory, model_name))

    def record(epoch, scores, trained):
        events.append(("record", epoch))
        trainer.table.history.append(12.5)
        recorded.update(scores=scores, trained=trained)
        return picked

    trainer.table.record_epoch = record
    scalars = []
    trainer.write_scalar = lambda *args: scalars.append(args)
    trainer.epoch = 3
    first, second = torch.rand(2, k), torch.rand(1, k)
    for picked in (False, True):
        recorded, events[:] = {}, []
        trainer.epoch_scores, trainer.epoch_index = [first, second], [torch.tensor([4, 0]), torch.tensor([2])]
        trainer.after_epoch()
        expected = torch.zeros(n, k)
        expected[4], expected[0], expected[2] = first[0], first[1], second[0]
        assert torch.equal(recorded["scores"], expected)
        assert recorded["trained"].tolist() == [i in (0, 2, 4) for i in range(n)]
        saved = [("save", 3, trainer.output_dir, ccd.SELECTED)] if picked else []
        assert events == [("record", 3), *saved, "engine.after_epoch"]
    assert scalars[-1] == ("train/mAP_vs_pseudo_labels", 12.5, 3)
    out = capsys.readouterr().out
    assert f"epoch [4/{trainer.max_epoch}] training mAP against the pseudo-labels 12.50" in out
    assert out.count("CCD: label-free selection picks epoch 4") == 1


@pytest.mark.parametrize("selected, reloaded", [(-1, False), (0, True), (2, False)])
def test_the_results_are_the_selected_models_with_the_final_ones_beside(tmp_path, synth_root, monkeypatch, capsys,
                                                                         selected, reloaded):
    trainer = ready(tmp_path, synth_root, "OPTIM.MAX_EPOCH", "3")
    evaluator = trainer.evaluator
    monkeypatch.setattr(SimpleTrainer, "after_train", lambda self: setattr(evaluator, "last_results",
                                                                           {"mAP": 50.0, "CF1": 40.0}))
    calls = []
    trainer.load_selected = lambda: calls.append("load_selected")
    trainer.test = lambda: calls.append("test") or evaluator.last_results.update(mAP=60.0)
    trainer.table.selected = selected
    trainer.table.targets = trainer.table.targets * 0.5
    trainer.after_train()
    results = evaluator.last_results
    assert calls == (["load_selected", "test"] if reloaded else [])
    assert results["mAP"] == (60.0 if reloaded else 50.0)
    assert results["final_mAP"] == 50.0 and results["final_CF1"] == 40.0
    assert results["selected_epoch"] == (1 if selected == 0 else 3)
    from leclip.metrics import mean_average_precision
    assert results["labels_initial_mAP"] == mean_average_precision(trainer.table.initial, trainer.hidden_labels)
    assert results["labels_final_mAP"] == mean_average_precision(trainer.table.targets, trainer.hidden_labels)
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert ("CCD: the label-free rule picked no epoch: the last epoch is the selected model" in lines) == (selected < 0)
    assert ("Deploy the model the label-free rule selected (epoch 1)" in lines) == reloaded


def test_the_selected_checkpoint_is_read_back(tmp_path, synth_root):
    trainer = ready(tmp_path, synth_root)
    state = {name: value + 1.0 if value.is_floating_point() else value
             for name, value in trainer.classifier.state_dict().items()}
    os.makedirs(os.path.join(trainer.output_dir, "classifier"))
    torch.save({"state_dict": state, "epoch": 1}, os.path.join(trainer.output_dir, "classifier", ccd.SELECTED))
    trainer.load_selected()
    assert all(torch.equal(value, state[name]) for name, value in trainer.classifier.state_dict().items())


# ---------------------------------------------------------------- label sources, ROLE, predict
def test_clip_source_floors_at_ls_coeff_and_logs_the_unreliable_images_and_the_bias(tmp_path, synth_root, capsys):
    trainer = make_trainer(tmp_path, synth_root, "TRAINER.CCD.CACHE_DIR", str(tmp_path / "cache"),
                           "TRAINER.CCD.LS_COEFF", "8.0", "TRAINER.CCD.MAX_ENTROPY", "1.0")
    targets, _, bias = ccd.LABEL_SOURCES["clip"](trainer)
    probs = trainer.clip_labels("global")
    flagged = clip_labels.unreliable(probs, 1.0)
    assert 0 < int(flagged.sum()) < len(probs)
    assert torch.allclose(targets, clip_labels.debias(probs, bias, 8.0))
    line = clip_labels.bias_line(trainer.classnames, probs, bias, ~flagged)
    assert line != clip_labels.bias_line(trainer.classnames, probs, bias, flagged)
    assert line != clip_labels.bias_line(trainer.classnames, probs, bias)
    out = capsys.readouterr().out
    assert f"CCD: {int(flagged.sum())} of {len(probs)} images unreliable (entropy > 1)\n" in out
    assert line + "\n" in out


def test_without_debiasing_the_bias_is_one(tmp_path, synth_root, capsys):
    trainer = make_trainer(tmp_path, synth_root, "TRAINER.CCD.CACHE_DIR", str(tmp_path / "cache"),
                           "TRAINER.CCD.DEBIAS", "False")
    targets, _, bias = ccd.LABEL_SOURCES["clip"](trainer)
    probs = trainer.clip_labels("global")
    assert torch.equal(bias, torch.ones(probs.shape[1]))
    assert torch.allclose(targets, clip_labels.debias(probs, bias, 20.0))
    assert "class bias" not in capsys.readouterr().out


def test_roles_estimates_are_seeded_and_learn_at_their_own_rate(tmp_path, synth_root):
    keys = ["TRAINER.CCD.LABELS", "top1", "TRAINER.CCD.LOSS", "role", "TRAINER.CCD.UPDATE", "False",
            "TRAINER.CCD.DEBIAS", "False", "TRAINER.CCD.CONSISTENCY", "False", "TRAINER.CCD.ROLE_LR_MULT", "7.0",
            "OPTIM.LR", "0.01"]
    trainer = ready(tmp_path, synth_root, *keys)
    estimator = trainer.estimator
    seeded = losses.LabelEstimator(trainer.table.targets, seed=trainer.seed).state_dict()
    assert trainer.seed != 0 and all(torch.equal(v, seeded[k]) for k, v in estimator.state_dict().items())
    assert "label_estimator" in trainer.get_model_names()
    (group,) = trainer._optims["label_estimator"].param_groups
    assert group["lr"] == pytest.approx(0.07) and group["params"] == list(estimator.parameters())
    assert trainer._scheds["label_estimator"] is not None


def test_the_table_knows_the_first_selectable_epoch(tmp_path, synth_root):
    trainer = ready(tmp_path, synth_root, "TRAINER.CCD.SELECT_AFTER_UPDATE", "True", "TRAINER.CCD.WARMUP_EPOCHS", "3")
    assert trainer.table.first_selectable == 5


def test_a_score_of_one_half_is_positive(tmp_path, synth_root):
    trainer = make_trainer(tmp_path, synth_root)
    trainer.classifier = lambda images: torch.tensor([[0.0, 2.0, -2.0]], dtype=torch.float64)
    scores, positives = trainer.predict(None, None)
    assert scores.dtype == torch.float32 and positives.tolist() == [[True, True, False]]


def test_the_walk_gets_the_runs_seeded_order_and_a_score_at_the_threshold_is_selected(tmp_path, synth_root,
                                                                                     monkeypatch):
    trainer = make_trainer(tmp_path, synth_root, "TRAINER.CCD.CALIBRATION", "walk", "TRAINER.CCD.BOUND", "3")
    scores = torch.tensor([[0.5, 0.2], [0.7, 0.5]])
    trainer.score_pass = lambda loader, fn, desc: (scores, torch.zeros(2, 2, 4))
    seen = []

    def walk(scores, bound, generator):
        seen.append((bound, generator.get_state()))
        return 0.5, 1.5

    monkeypatch.setattr(cam, "calibrate_threshold_walk", walk)
    _, _, selected = trainer.cam_selection(None, "walk")
    assert selected.tolist() == [[True, False], [True, True]]  # >= the threshold
    assert seen[0][0] == 3 and torch.equal(seen[0][1], torch.Generator().manual_seed(trainer.seed).get_state())


def test_each_step_keeps_its_scores_and_indices_for_the_epochs_rule(tmp_path, synth_root):
    from test_ccd import hand_logits, one_step

    trainer, batch, _ = one_step(tmp_path, synth_root, "TRAINER.CCD.UPDATE", "False")
    assert len(trainer.epoch_index) == 1 and torch.equal(trainer.epoch_index[0], batch["index"])
    assert torch.allclose(trainer.epoch_scores[0], hand_logits(trainer, batch, "ccd_train").sigmoid(), atol=1e-6)


def test_the_pseudo_labels_map_is_printed_and_logged(tmp_path, synth_root, capsys):
    from leclip.metrics import mean_average_precision

    trainer = ready(tmp_path, synth_root, "OPTIM.MAX_EPOCH", "4")
    scalars = []
    trainer.write_scalar = lambda *args: scalars.append(args)
    trainer.epoch = 2
    trainer.report_labels("after a test")
    value = mean_average_precision(trainer.table.targets, trainer.hidden_labels)
    assert scalars == [("train/pseudo_label_mAP", value, 2)]
    assert f"epoch [3/4] pseudo-labels (after a test): mAP {value:.2f} against the hidden labels\n" in capsys.readouterr().out


@pytest.mark.parametrize("start_epoch, what", [(0, "initial"), (1, "resumed")])
def test_the_first_pseudo_labels_line_says_initial_or_resumed(tmp_path, synth_root, monkeypatch, capsys,
                                                               start_epoch, what):
    monkeypatch.setattr(SimpleTrainer, "before_train", lambda self: setattr(self, "start_epoch", start_epoch))
    trainer = make_trainer(tmp_path, synth_root, "TRAINER.CCD.CACHE_DIR", str(tmp_path / "cache"))
    trainer.epoch = start_epoch
    trainer.before_train()
    assert f"pseudo-labels ({what}): mAP " in capsys.readouterr().out


def test_clips_normalisation_follows_clip_norm():
    from leclip.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    cfg = get_cfg_default()
    cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD = [0.1, 0.2, 0.3], [0.4, 0.5, 0.6]
    assert ccd.clip_normalisation(cfg) == ([0.1, 0.2, 0.3], [0.4, 0.5, 0.6])
    cfg.TRAINER.CCD.CLIP_NORM = "imagenet"
    assert ccd.clip_normalisation(cfg) == (IMAGENET_MEAN, IMAGENET_STD)


@pytest.mark.parametrize("opts, message", [
    ({"TRAINER.SSL.MODE": "fixmatch"}, r"^CCD learns from CLIP's pseudo-labels: set TRAINER\.SSL\.MODE none$"),
    ({"TRAINER.CCD.CLIP_NORM": "caffe"}, r"^TRAINER\.CCD\.CLIP_NORM='caffe': use one of \('clip', 'imagenet'\)$"),
    ({"TRAINER.CCD.CLIP_NORM": "imagenet"},
     r"^TRAINER\.CCD\.CLIP_NORM imagenet renormalises the views CCD builds: set CLIP_VIEW squash$"),
    ({"TRAINER.CCD.INPUT_SIZE": 16}, r"INPUT_SIZE=16, .*: use WARMUP_EPOCHS, CLIP_SIZE, LABEL_PASS_SIZE >= 0, "
                                     r"INPUT_SIZE >= 32, CROPS_PER_CLASS >= 1$"),
    ({"TRAINER.CCD.LABELS": "true", "TRAINER.CCD.UPDATE": False, "TRAINER.CCD.DEBIAS": False},
     r"^TRAINER\.CCD\.LABELS='true': the label update, debiasing and consistency are CCD's"),
    ({"TRAINER.CCD.JITTER": (0.5, 0.0, 0.5, 0.5)}, None),  # a zero jitter is allowed
    ({"TRAINER.CCD.CLIP_NORM": "imagenet", "TRAINER.CCD.CLIP_VIEW": "squash"}, None),
])
def test_ccd_config_checks(opts, message):
    cfg = get_cfg_default()
    cfg.TRAINER.SSL.MODE = "none"
    cfg.DATALOADER.TRAIN_U.VIEWS = list(ccd.TRAIN_VIEWS)
    for dotted, value in opts.items():
        node = cfg
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    trainer = object.__new__(ccd.CCD)
    if message is None:
        trainer.check_cfg(cfg)
    else:
        with pytest.raises(ValueError, match=message):
            trainer.check_cfg(cfg)
