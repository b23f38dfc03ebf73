"""train.py --viz on tiny embedded worlds: CCD draws the crops its label update cuts, CSA
writes the contexts it clustered and attention maps that are distributions over the
patches, a trainer without figures says so in one line, and the harness passes the flag on."""
import math

import numpy as np
import pytest
import torch
from PIL import Image
from test_bad_inputs import harness_main, no_launch, train, train_args  # noqa: F401 (no_launch: a fixture)
from test_ccd import TINY

from leclip import config, viz
from leclip.dassl import get_cfg_default
from leclip.multilabel import contexts, label_update
from leclip.trainers.ccd import CCD
from leclip.trainers.csa import CSA

PANEL = 300  # px: viz.PANEL_INCHES (3) x viz.DPI (100)
CSA_TINY = ["DATASET.SYNTH.POOL_PER_CLASS", "8", "DATASET.SYNTH.TEST_PER_CLASS", "2", "OPTIM.MAX_EPOCH", "1",
            "DATALOADER.TRAIN_X.BATCH_SIZE", "4"]


def record(monkeypatch, owner, name):
    """Calls of owner.name (still made), as (args, result)."""
    calls = []
    original = getattr(owner, name)

    def spy(*args, **kwargs):
        result = original(*args, **kwargs)
        calls.append((args, result))
        return result

    monkeypatch.setattr(owner, name, spy)
    return calls


def record_trainer(monkeypatch, cls):
    """The trainer of class `cls` whose visualize the run calls."""
    seen = []
    original = cls.visualize
    monkeypatch.setattr(cls, "visualize", lambda self, folder: seen.append(self) or original(self, folder))
    return seen


def png(path):
    """(width, height), pixel variance of a PNG (opened by PIL)."""
    with Image.open(path) as image:
        return image.size, float(np.asarray(image.convert("RGB"), dtype=np.float64).var())


def test_ccd_draws_the_crops_of_its_label_update(run_trainer, monkeypatch, tmp_path):
    trainers = record_trainer(monkeypatch, CCD)
    drawn = record(monkeypatch, viz, "cam_box_crop")
    out = tmp_path / "ccd"
    # 2 x 2 CAMs; 1..3 classes selected per image on average (fewer panels to draw)
    opts = TINY + ["TRAINER.CCD.INPUT_SIZE", "64", "TRAINER.CCD.BOUND", "1", "TRAINER.VIZ_IMAGES", "3"]
    run_trainer("CCD", "configs/trainers/CCD/synth.yaml", opts, dataset="synth_ml", setting="unsup",
                output_dir=str(out), viz=True)
    (trainer,) = trainers
    # the label update, run now with the same classifier: the crops it cuts for CLIP
    cut = record(monkeypatch, label_update, "cut_crops")
    selections = record(monkeypatch, trainer, "cam_selection")
    trainer.update_labels()
    ((_, (crops, crop_image)),) = cut  # one batch: every training image
    selected = selections[0][1][2]
    image_index, class_index = selected.nonzero(as_tuple=True)
    assert torch.equal(crop_image, image_index)
    mean, std = trainer.cfg.INPUT.PIXEL_MEAN, trainer.cfg.INPUT.PIXEL_STD
    assert len(drawn) == 3  # TRAINER.VIZ_IMAGES
    assert sum(len(rows) for (_, _, rows), _ in drawn) > 0  # some crops to compare
    for i, ((path, image, rows), _) in enumerate(drawn):
        assert path == str(out / "viz" / f"ccd_cam_image{i}.png")
        update_crops = {int(class_index[k]): crops[k] for k in (image_index == i).nonzero().flatten()}
        assert sorted(trainer.classnames.index(row.name) for row in rows) == sorted(update_crops)
        for row in rows:
            crop = viz.to_rgb(update_crops[trainer.classnames.index(row.name)], mean, std)
            assert row.crop.shape == (64, 64, 3) and np.allclose(row.crop, crop, atol=1e-6)
            # the map drawn is the one the box was cut from: its hot pixels lie in the box
            ys, xs = np.nonzero(row.heat > trainer.cfg.TRAINER.CCD.CAM_THRESHOLD)
            x1, y1, x2, y2 = row.box
            assert row.heat.shape == (64, 64) and len(xs) > 0
            assert x1 <= xs.min() and xs.max() < x2 and y1 <= ys.min() and ys.max() < y2
        assert image.shape == (64, 64, 3)
        pairs = max(len(rows), 1)  # two panels per class, 4 classes a line
        size, variance = png(path)
        assert size == (2 * min(pairs, 4) * PANEL, math.ceil(pairs / 4) * PANEL) and variance > 0
    assert not (out / "viz" / "ccd_cam_image3.png").exists()


def test_cam_box_crop_draws_four_classes_a_line(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.random((16, 16, 3))
    row = viz.CamRow("red disc", 0.5, rng.random((16, 16)), (2.0, 3.0, 10.0, 12.0), rng.random((8, 8, 3)), "crop")
    assert png(viz.cam_box_crop(str(tmp_path / "five.png"), image, [row] * 5))[0] == (8 * PANEL, 2 * PANEL)
    size, variance = png(viz.cam_box_crop(str(tmp_path / "none.png"), image, []))
    assert size == (2 * PANEL, PANEL) and variance > 0  # the image alone


def test_csa_writes_its_contexts_and_attention_distributions(run_trainer, monkeypatch, tmp_path):
    trainers = record_trainer(monkeypatch, CSA)
    grids = record(monkeypatch, viz, "attention_grid")
    out = tmp_path / "csa"
    run_trainer("CSA", "configs/trainers/CSA/synth.yaml", CSA_TINY, dataset="synth_ml", setting="0.1",
                output_dir=str(out), viz=True)
    (trainer,) = trainers
    folder = out / "viz"
    # the text file lists exactly the clusters CSA computed
    listed = {}
    for line in (folder / "csa_contexts.txt").read_text().splitlines():
        heading, names = line.split(": ")
        context = contexts.NO_CONTEXT if heading.startswith("no context") else int(heading.split()[1])
        listed.update({trainer.classnames.index(name): context for name in names.split(", ")})
    assert listed == dict(enumerate(trainer.class_context.tolist()))
    assert contexts.NO_CONTEXT in listed.values()  # this world leaves some classes without labeled positives
    # 16 classes: a 4-inch matrix (3 inches per 12 classes) + 1.5 x 1 inch for the colour bar and names
    assert png(folder / "csa_label_correlation.png")[0] == (550, 500)
    assert png(folder / "csa_label_correlation.png")[1] > 0
    assert len(grids) == 4  # TRAINER.VIZ_IMAGES' default
    for i, ((path, image, maps, titles), _) in enumerate(grids):
        assert path == str(folder / f"csa_attention_image{i}.png")
        assert image.shape == (64, 64, 3) and maps.shape == (16, 8, 8) and len(titles) == 16  # 8 x 8 patches
        # each class's weights are a distribution over the patches
        assert np.allclose(maps.reshape(16, -1).sum(axis=1), 1.0, atol=1e-5) and maps.min() >= 0
        # 17 panels (the image and 16 classes): 5 x 4 panels of 2 inches
        size, variance = png(path)
        assert size == (1000, 800) and variance > 0


def test_a_trainer_without_figures_says_so_in_one_line(capsys, synth_root, tmp_path):
    out = tmp_path / "zs"
    code, stdout, err = train(capsys, "--viz", *train_args(synth_root, out, "LEZeroshotCLIP", *TINY[:4],
                                                           dataset="synth_ml", setting="unsup"))
    assert code == 0 and "Traceback" not in err
    line = "--viz: trainer LEZeroshotCLIP has no visualisation (CCD and CSA have)"
    assert stdout.count(line) == 1 and (out / "results.json").exists() and not (out / "viz").exists()


def test_the_harness_passes_viz_to_train_py(capsys, monkeypatch, tmp_path, no_launch):  # noqa: F811 (the fixture)
    monkeypatch.setenv("OUTPUT", str(tmp_path))
    assert harness_main(capsys, "run", "csa", "synth_ml", "0.1", "1", "--viz")[0] == 0
    assert harness_main(capsys, "run", "csa", "synth_ml", "0.1", "2")[0] == 0
    with_flag, without = no_launch
    assert with_flag.count("--viz") == 1 and "--viz" not in without


def test_viz_images_must_be_positive():
    cfg = get_cfg_default()
    config.check_config(cfg)  # the defaults pass
    cfg.TRAINER.VIZ_IMAGES = 0
    with pytest.raises(ValueError, match="TRAINER.VIZ_IMAGES=0: use at least 1 image"):
        config.check_config(cfg)
