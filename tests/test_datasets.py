"""The nine real benchmarks on miniature replicas of their official layouts."""
import json
import os
import sys

import pytest

import miniature
from leclip import harness
from leclip.dassl import build_dataset


def load(key, root, *opts, seed=1):
    setting = {"semiaves": "in"}.get(key, "unsup" if harness.check_dataset(key)[1] == "BC" else "2")
    cfg = harness.setup_cfg(
        dataset_config_file=harness.dataset_config(key),
        opts=harness.setting_opts(key, setting) + list(opts),
        root=str(root),
        seed=seed,
    )
    return build_dataset(cfg)


def paths(data):
    return {d.impath for d in data}


@pytest.mark.parametrize("key", ["dogs", "cars", "cub", "aircraft"])
def test_open_set_splits(tmp_path, key):
    getattr(miniature, key)(tmp_path)
    data = load(key, tmp_path)
    assert data.task == "ossl" and len(data.all_classnames) == 4
    assert data.num_classes == 2  # ID = first half of the classes
    assert len(data.train_x) == 2 * 2 and {d.label for d in data.train_x} == {0, 1}
    pool = 4 * (8 if key != "aircraft" else 8)  # aircraft: train + val, 4 each
    assert len(data.train_x) + len(data.train_u) == pool
    assert {d.label for d in data.train_u} == {0, 1, 2, 3}  # ID and OOD, labels hidden from trainers
    assert len(data.test) == 4 * 2
    assert not (paths(data.train_x) & paths(data.train_u))
    assert not (paths(data.train_x) | paths(data.train_u)) & paths(data.test)
    # the same seed gives the same labeled set, another seed another one
    assert paths(load(key, tmp_path).train_x) == paths(data.train_x)
    assert paths(load(key, tmp_path, seed=2).train_x) != paths(data.train_x)


def test_class_names_and_order(tmp_path):
    for key in ("dogs", "cars", "cub", "aircraft"):
        getattr(miniature, key)(tmp_path)
    assert load("dogs", tmp_path).all_classnames == ["Chihuahua", "Japanese spaniel", "Maltese dog", "Pekinese"]
    # CoOp's convention: the year moves to the front
    assert load("cars", tmp_path).all_classnames[2] == "2012 Tesla Model S Sedan"
    assert load("cub", tmp_path).all_classnames[0] == "Black footed Albatross"
    assert load("aircraft", tmp_path).all_classnames == miniature.AIRCRAFT_VARIANTS


def test_aircraft_official_archive_layout(tmp_path):
    miniature.aircraft(tmp_path, layout=os.path.join("fgvc-aircraft-2013b", "data"))
    assert len(load("aircraft", tmp_path).test) == 8


def test_semiaves_settings(tmp_path):
    miniature.semiaves(tmp_path)
    inside = load("semiaves", tmp_path)
    assert inside.num_classes == 4 and len(inside.train_x) == 12 and len(inside.val) == 4 and len(inside.test) == 8
    assert len(inside.train_u) == 6 and {d.label for d in inside.train_u} == {-1}
    both = load("semiaves", tmp_path, "DATASET.SETTING", "inout")
    assert len(both.train_u) == 11 and sum(d.label >= 4 for d in both.train_u) == 5  # U_out is OOD


def test_voc_labels_include_difficult_objects(tmp_path):
    miniature.voc(tmp_path)
    data = load("voc2007", tmp_path)
    assert data.task == "multilabel" and data.num_classes == 20 and data.train_x == []
    labels = {os.path.basename(d.impath): d.label for d in data.train_u}
    dog, person = 11, 14
    assert labels["2007_000000.jpg"][dog] == labels["2007_000000.jpg"][person] == 1
    assert sum(labels["2007_000003.jpg"]) == 1 and labels["2007_000003.jpg"][dog] == 1  # difficult only
    assert "tv monitor" in data.classnames


def test_voc2012_uses_train_and_val(tmp_path):
    miniature.voc(tmp_path, "2012", ("train", "val"))
    data = load("voc2012", tmp_path)
    assert len(data.train_u) == len(data.test) == 6


def test_coco_category_ids_map_to_contiguous_labels(tmp_path):
    miniature.coco(tmp_path)
    data = load("coco", tmp_path)
    assert data.classnames == ["person", "car", "toothbrush"]
    labels = {os.path.basename(d.impath): d.label for d in data.train_u}
    assert len(labels) == 4  # the image without any object is left out
    assert labels["COCO_train2014_000000000001.jpg"] == (0, 1, 1)  # ids 3 and 90
    assert len(data.test) == 3


def test_multilabel_labeled_ratio_split(tmp_path):
    miniature.coco(tmp_path)
    data = load("coco", tmp_path, "DATASET.SETTING", "", "DATASET.LABELED_RATIO", "0.5")
    assert len(data.train_x) == 2 and len(data.train_u) == 2
    assert not paths(data.train_x) & paths(data.train_u)
    again = load("coco", tmp_path, "DATASET.SETTING", "", "DATASET.LABELED_RATIO", "0.5")
    assert paths(again.train_x) == paths(data.train_x)


def test_nuswide_skips_missing_images_with_a_count(tmp_path, capsys):
    miniature.nuswide(tmp_path, missing=2)
    data = load("nuswide", tmp_path)
    assert len(data.train_u) == 4 and len(data.test) == 3
    assert "skipped 2 of 6 listed images" in capsys.readouterr().out
    assert data.train_u[0].label == (1, 0, 0)  # "animal" of image 0: (0 + 0) % 3 == 0


def test_split_cache_is_reused_and_survives_a_rebuild(tmp_path):
    miniature.cub(tmp_path)
    first = load("cub", tmp_path)
    cache = tmp_path / "CUB_200_2011" / "splits" / "cub" / "id0.5_n2_seed1.json"
    assert cache.exists()
    cache.unlink()
    assert paths(load("cub", tmp_path).train_x) == paths(first.train_x)
    stored = json.loads(cache.read_text())
    assert stored["fingerprint"]["count"] == 32


def test_wrong_root_names_the_folder_and_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="stanford_dogs.*DATASET.ROOT"):
        load("dogs", tmp_path)


def test_missing_annotation_file_is_named(tmp_path):
    miniature.cub(tmp_path)
    os.remove(tmp_path / "CUB_200_2011" / "train_test_split.txt")
    with pytest.raises(FileNotFoundError, match="train_test_split.txt"):
        load("cub", tmp_path)


def test_missing_image_is_named(tmp_path):
    miniature.cars(tmp_path)
    os.remove(tmp_path / "stanford_cars" / "cars_test" / "00003.jpg")
    with pytest.raises(FileNotFoundError, match="(?s)1 of 40 listed images are missing.*00003.jpg"):
        load("cars", tmp_path)


def test_too_few_images_for_n_labels(tmp_path):
    miniature.dogs(tmp_path, train_per_class=3)
    with pytest.raises(ValueError, match="Chihuahua.*fewer than DATASET.NUM_LABELED=5"):
        load("dogs", tmp_path, "DATASET.NUM_LABELED", "5")


def test_unknown_voc_class_is_an_error(tmp_path):
    miniature.voc(tmp_path)
    path = tmp_path / "VOCdevkit" / "VOC2007" / "Annotations" / "2007_000001.xml"
    path.write_text(miniature.voc_annotation([("unicorn", 0)]))
    with pytest.raises(ValueError, match="unknown VOC classes.*unicorn"):
        load("voc2007", tmp_path)


def test_check_dataset_lists_every_missing_file(tmp_path, capsys):
    import runpy

    miniature.cub(tmp_path)
    for i in (1, 2):
        os.remove(tmp_path / "CUB_200_2011" / "images" / "002.Laysan_Albatross" / f"Laysan_Albatross_{i}.jpg")
    check = runpy.run_path(os.path.join(harness.REPO, "scripts", "check_dataset.py"))
    assert check["main"](["cub", "--root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "2 listed files are missing" in out and "Laysan_Albatross_2.jpg" in out


@pytest.mark.parametrize(
    "key,setting,metric",
    [("dogs", "5", "closed_accuracy"), ("cars", "5", "closed_accuracy"), ("cub", "5", "closed_accuracy"),
     ("aircraft", "5", "closed_accuracy"), ("semiaves", "inout", "closed_accuracy"),
     ("voc2007", "unsup", "mAP"), ("voc2012", "0.5", "mAP"), ("coco", "unsup", "mAP"), ("nuswide", "unsup", "mAP")],
)
def test_zero_shot_runs_on_every_replica(tmp_path, key, setting, metric):
    """What `scripts/run.sh zsclip <key> <setting>` does, with the embedded small CLIP."""
    builder = {"voc2007": miniature.voc, "voc2012": lambda root: miniature.voc(root, "2012", ("train", "val"))}
    (builder.get(key) or getattr(miniature, key))(tmp_path)
    cfg = harness.setup_cfg(
        harness.trainer_config("zsclip", key),
        harness.dataset_config(key),
        harness.setting_opts(key, setting) + ["MODEL.BACKBONE.NAME", "synth-vit", "INPUT.SIZE", "(32, 32)"],
        root=str(tmp_path),
        output_dir=str(tmp_path / "out"),
        seed=1,
        trainer="LEZeroshotCLIP",
    )
    stdout = sys.stdout
    try:
        results = harness.run(cfg)
    finally:
        sys.stdout = stdout
    assert 0 <= results[metric] <= 100
    assert json.loads((tmp_path / "out" / "results.json").read_text())[metric] == results[metric]
