"""The nine real benchmarks on miniature replicas of their official layouts."""
import importlib.util
import json
import logging
import os
import random
import sys

import pytest
import torch
from scipy.io import loadmat, savemat

import miniature
import zero_shot
from leclip import catalogue, runner
from leclip.data import splits
from leclip.dassl import build_dataset


def load(key, root, *opts, seed=1):
    setting = {"semiaves": "in"}.get(key, "unsup" if catalogue.check_dataset(key).cls.task == "multilabel" else "2")
    cfg = catalogue.setup_cfg(
        dataset_config_file=catalogue.dataset_config(key),
        opts=catalogue.setting_opts(key, setting) + list(opts),
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
    assert inside.classnames == ["Charadrius semipalmatus", "Tachycineta thalassina", "Jacana spinosa", "Falco peregrinus"]
    # U_in's hidden labels come from the oracle file, matched by path (diagnostics only)
    hidden = {os.path.basename(d.impath): d.label for d in inside.train_u}
    assert hidden == {f"{i}.jpg": i % 4 for i in range(6)}
    both = load("semiaves", tmp_path, "DATASET.SETTING", "inout")
    assert len(both.train_u) == 11
    assert [d.label for d in both.train_u if "u_train_out" in d.impath] == [4] * 5  # the one out-of-class index K
    assert both.all_classnames[4] == "out-of-class"


def test_semiaves_without_names_or_oracle(tmp_path):
    miniature.semiaves(tmp_path, names=False, oracle=False)
    data = load("semiaves", tmp_path)
    assert data.classnames == ["species 0", "species 1", "species 2", "species 3"]
    assert {d.label for d in data.train_u} == {-1}  # unknown ID class


def test_semiaves_needs_its_setting(tmp_path):
    miniature.semiaves(tmp_path)
    with pytest.raises(ValueError, match="'in' .*'inout'"):
        load("semiaves", tmp_path, "DATASET.SETTING", "")


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
    assert capsys.readouterr().out.count("skipped 2 of 6 Train and 0 of 3 Test listed images missing") == 1
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
    check = runpy.run_path(os.path.join(catalogue.REPO, "scripts", "check_dataset.py"))
    assert check["main"](["cub", "--root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "2 listed files are missing" in out and "Laysan_Albatross_2.jpg" in out


def _check_script():
    spec = importlib.util.spec_from_file_location("check_dataset", os.path.join(catalogue.REPO, "scripts", "check_dataset.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_check_dataset_counts_nuswide_images_missing_on_disk(tmp_path, capsys, monkeypatch):
    check = _check_script()
    miniature.nuswide(tmp_path, missing=2)
    nuswide = catalogue.check_dataset("nuswide").cls
    monkeypatch.setattr(nuswide, "official", {"classes": 3, "train": 6, "val": 0, "test": 3})  # the replica's own
    assert check.main(["nuswide", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Train images listed but missing on disk (skipped): 2" in out and "copy matches" in out
    monkeypatch.setattr(nuswide, "official", {"classes": 81, "train": 6, "val": 0, "test": 3})
    assert check.main(["nuswide", "--root", str(tmp_path)]) == 1
    assert "classes:       3  (official 81)  DIFFERS" in capsys.readouterr().out


def test_dassl_api_registers_the_nine_benchmarks():
    from leclip import dassl

    names = ["LEStanfordDogs", "LEStanfordCars", "LECUB", "LEFGVCAircraft", "LESemiAves",
             "LEVOC2007", "LEVOC2012", "LECOCO", "LENUSWIDE"]
    catalogue.setup_cfg(dataset_config_file=catalogue.dataset_config("dogs"), opts=[], root=".", seed=1)
    assert all(name in dassl.DATASET_REGISTRY.registered_names() for name in names)


def test_label_mapping_of_the_mat_files(tmp_path):
    miniature.dogs(tmp_path)
    miniature.cars(tmp_path)
    dogs = load("dogs", tmp_path)
    labels = {d.impath.split("Images" + os.sep)[1]: d.label for d in dogs.train_x + dogs.train_u + dogs.test}
    # 1-based `labels` in the lists -> 0-based, in the lists' class order
    assert labels["n02085782-Japanese_spaniel/train_0.jpg"] == 1 and labels["n02086079-Pekinese/test_1.jpg"] == 3
    cars = load("cars", tmp_path)
    labels = {os.path.basename(d.impath): d.label for d in cars.train_x + cars.train_u}
    assert labels["00008.jpg"] == 0 and labels["00009.jpg"] == 1 and labels["00032.jpg"] == 3  # 8 per class
    assert cars.classnames == ["2000 AM General Hummer SUV", "2012 Acura RL Sedan"]  # ID = first half
    assert {d.classname for d in cars.train_u if d.label == 3} == {"2012 smart fortwo Convertible"}


def test_splits_are_drawn_by_hand_checkable_rules():
    pool = [0, 0, 0, 1, 1, 1, 2, 2, 3, 3]
    state = random.getstate()
    split = splits.open_set_split(pool, 4, 0.5, 2, seed=7)
    assert random.getstate() == state  # a local generator, never the global one
    assert split["num_id"] == 2 and split["id_classes"] == [0, 1]
    assert [pool[i] for i in split["labeled"]] == [0, 0, 1, 1]
    assert sorted(split["labeled"] + split["unlabeled"]) == list(range(10))
    assert split == splits.open_set_split(pool, 4, 0.5, 2, seed=7)
    assert any(splits.open_set_split(pool, 4, 0.5, 2, seed=s)["labeled"] != split["labeled"] for s in range(8, 12))
    with pytest.raises(ValueError, match="'c2' has 2 training images, fewer than DATASET.NUM_LABELED=3"):
        splits.open_set_split(pool, 4, 0.75, 3, seed=1, classnames=["c0", "c1", "c2", "c3"])
    ratio = splits.labeled_ratio_split(20, 0.15, seed=3)
    assert len(ratio["labeled"]) == 3 and len(ratio["unlabeled"]) == 17
    assert not set(ratio["labeled"]) & set(ratio["unlabeled"])
    with pytest.raises(ValueError, match="LABELED_RATIO=0"):
        splits.labeled_ratio_split(20, 0, seed=3)


def test_cached_split_reuses_rebuilds_and_survives_a_read_only_folder(tmp_path, caplog):
    calls = []

    def build():
        calls.append(1)
        return splits.labeled_ratio_split(10, 0.5, seed=1)

    first = splits.cached_split(str(tmp_path), "toy", "ratio0.5", 1, build, {"count": 10})
    path = tmp_path / "splits" / "toy" / "ratio0.5_seed1.json"
    assert json.loads(path.read_text())["split"] == first and len(calls) == 1
    assert splits.cached_split(str(tmp_path), "toy", "ratio0.5", 1, build, {"count": 10}) == first and len(calls) == 1
    with caplog.at_level(logging.WARNING, logger="leclip"):
        again = splits.cached_split(str(tmp_path), "toy", "ratio0.5", 1, build, {"count": 11})
    assert again == first and len(calls) == 2 and "changed since" in caplog.text
    path.write_text("{truncated")
    assert splits.cached_split(str(tmp_path), "toy", "ratio0.5", 1, build, {"count": 11}) == first and len(calls) == 3
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with caplog.at_level(logging.WARNING, logger="leclip"):
        assert splits.cached_split(str(blocker), "toy", "ratio0.5", 1, build, {"count": 10}) == first
    assert "Cannot cache the split" in caplog.text


def test_coco_index_cache_follows_the_json(tmp_path):
    miniature.coco(tmp_path)
    annotations = tmp_path / "coco" / "annotations" / "instances_val2014.json"
    assert len(load("coco", tmp_path).test) == 3
    assert (tmp_path / "coco" / "annotations" / "instances_val2014.json.leclip-index.json").exists()
    instances = json.loads(annotations.read_text())
    instances["annotations"] = [a for a in instances["annotations"] if a["image_id"] != 100]
    annotations.write_text(json.dumps(instances))
    assert len(load("coco", tmp_path).test) == 2  # the edited JSON is parsed again, not the stale index


def test_coco_unknown_category_is_an_error(tmp_path):
    miniature.coco(tmp_path)
    annotations = tmp_path / "coco" / "annotations" / "instances_train2014.json"
    instances = json.loads(annotations.read_text())
    instances["annotations"][0]["category_id"] = 12
    annotations.write_text(json.dumps(instances))
    with pytest.raises(ValueError, match="instances_train2014.json: annotation 1 has unknown category id 12"):
        load("coco", tmp_path)


def test_nuswide_label_file_of_the_wrong_length_is_named(tmp_path):
    miniature.nuswide(tmp_path)
    path = tmp_path / "nuswide" / "TrainTestLabels" / "Labels_sky_Test.txt"
    path.write_text("0\n1\n")
    with pytest.raises(ValueError, match="Labels_sky_Test.txt has 2 labels for 3 listed images"):
        load("nuswide", tmp_path)
    path.write_text("0\n2\n1\n")
    with pytest.raises(ValueError, match="Labels_sky_Test.txt holds values other than 0 and 1"):
        load("nuswide", tmp_path)


def test_unreadable_voc_annotation_is_named(tmp_path):
    miniature.voc(tmp_path)
    path = tmp_path / "VOCdevkit" / "VOC2007" / "Annotations" / "2007_000002.xml"
    path.write_text("<annotation><object>")
    with pytest.raises(ValueError, match="Unreadable VOC annotation .*2007_000002.xml"):
        load("voc2007", tmp_path)


def test_unknown_aircraft_variant_is_named(tmp_path):
    miniature.aircraft(tmp_path)
    with open(tmp_path / "fgvc_aircraft" / "images_variant_val.txt", "a") as f:
        f.write("1000001 Boeing 797\n")
    with pytest.raises(ValueError, match="images_variant_val.txt names variant 'Boeing 797'"):
        load("aircraft", tmp_path)


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
    cfg = catalogue.setup_cfg(
        catalogue.trainer_config("zsclip", key),
        catalogue.dataset_config(key),
        catalogue.setting_opts(key, setting) + ["MODEL.BACKBONE.NAME", "synth-vit", "INPUT.SIZE", "(64, 64)"],
        root=str(tmp_path),
        output_dir=str(tmp_path / "out"),
        seed=1,
        trainer="LEZeroshotCLIP",
    )
    stdout = sys.stdout
    try:
        results = runner.run(cfg)
    finally:
        sys.stdout = stdout
    sims, labels = zero_shot.similarities(build_dataset(cfg), cfg.DATASET.PROMPT_TEMPLATE)
    expected = zero_shot.closed_accuracy(sims, labels) if metric == "closed_accuracy" else zero_shot.mean_ap(sims, labels)
    assert results[metric] == pytest.approx(expected, abs=1e-6)
    assert json.loads((tmp_path / "out" / "results.json").read_text())[metric] == results[metric]


# ---------------------------------------------------------------- loading in worker processes
def loader_batches(root, workers):
    """Two epochs of CFSG-CLIP's labeled and unlabeled (weak + strong) batches on Cars."""
    from leclip.data.datamanager import DataManager

    cfg = catalogue.setup_cfg(
        catalogue.trainer_config("cfsg", "cars"), catalogue.dataset_config("cars"),
        catalogue.setting_opts("cars", "5") + ["INPUT.SIZE", "(32, 32)", "DATALOADER.NUM_WORKERS", str(workers),
                                              "DATALOADER.TRAIN_X.BATCH_SIZE", "4", "DATALOADER.TRAIN_U.BATCH_SIZE", "4"],
        root=str(root), seed=1, trainer="CFSG",
    )
    dm = DataManager(cfg, build_dataset(cfg))
    batches = []
    for epoch in (0, 1):
        dm.set_epoch(epoch)
        batches += list(dm.train_loader_x) + list(dm.train_loader_u)
    return batches


def test_real_benchmarks_load_in_worker_processes_with_the_same_batches(tmp_path):
    for key in catalogue.datasets():
        if not key.startswith("synth_"):
            assert catalogue.setup_cfg(dataset_config_file=catalogue.dataset_config(key)).DATALOADER.NUM_WORKERS > 0, key
    miniature.cars(tmp_path, size=(120, 90))
    in_process, in_workers = loader_batches(tmp_path, 0), loader_batches(tmp_path, 2)
    assert len(in_process) == len(in_workers) == 2 * (2 + 5)  # 10 labeled, 22 unlabeled an epoch, whole batches of 4
    for one, other in zip(in_process, in_workers):
        assert one.keys() == other.keys()
        for key, value in one.items():
            assert torch.equal(value, other[key]) if isinstance(value, torch.Tensor) else value == other[key], key
    assert "img_strong" in in_process[2]  # RandAugment's draws too
    assert not torch.equal(in_process[0]["img"], in_process[7]["img"])  # the second epoch draws anew


# ---------------------------------------------------------------- the split cache and the layouts as distributed
def test_relabelling_rebuilds_the_split(tmp_path):
    """A cached split holds indices into the pool: after a relabelling it must be drawn
    again, or an image that became OOD would stay in the labeled set."""
    miniature.cub(tmp_path)
    first = load("cub", tmp_path)
    moved = sorted(paths(first.train_x))[0]  # a labeled ID image ...
    base = tmp_path / "CUB_200_2011"
    image_ids = {rel: image_id for image_id, rel in (line.split(" ", 1) for line in (base / "images.txt").read_text().split("\n") if line)}
    moved_id = image_ids[moved.split("images" + os.sep, 1)[1]]
    labels = [line.split() for line in (base / "image_class_labels.txt").read_text().split("\n") if line]
    # ... relabelled as class 4, an OOD class
    (base / "image_class_labels.txt").write_text("".join(f"{i} {4 if i == moved_id else k}\n" for i, k in labels))
    again = load("cub", tmp_path)
    assert moved not in paths(again.train_x)
    assert all(d.label < again.num_classes for d in again.train_x)
    assert {d.label for d in again.train_u if d.impath == moved} == {3}


def test_reordered_lists_rebuild_the_split(tmp_path):
    miniature.dogs(tmp_path)
    first = load("dogs", tmp_path)
    path = tmp_path / "stanford_dogs" / "lists" / "train_list.mat"
    mat = loadmat(path)
    savemat(path, {"file_list": mat["file_list"][::-1], "labels": mat["labels"][::-1]})  # same items, other order
    again = load("dogs", tmp_path)
    assert all(d.label < again.num_classes for d in again.train_x)
    assert len(again.train_x) == len(first.train_x)


def test_dogs_lists_extracted_at_the_top_level(tmp_path):
    miniature.dogs(tmp_path, lists="")  # lists.tar extracted in place: no lists/ folder
    data = load("dogs", tmp_path)
    assert data.all_classnames == ["Chihuahua", "Japanese spaniel", "Maltese dog", "Pekinese"]
    assert len(data.train_x) + len(data.train_u) == 32 and len(data.test) == 8
    os.remove(tmp_path / "stanford_dogs" / "test_list.mat")
    with pytest.raises(FileNotFoundError, match="(?s)expected .*lists/test_list.mat or .*dogs/test_list.mat.*lists.tar"):
        load("dogs", tmp_path)


def test_nuswide_official_layout(tmp_path):
    miniature.nuswide(tmp_path / "flat")
    miniature.nuswide(tmp_path / "official", official=True)  # Groundtruth/TrainTestLabels/, ConceptsList/
    assert not (tmp_path / "official" / "nuswide" / "TrainTestLabels").exists()
    flat, official = load("nuswide", tmp_path / "flat"), load("nuswide", tmp_path / "official")
    assert official.classnames == flat.classnames == miniature.NUS_CONCEPTS
    assert [d.label for d in official.train_u] == [d.label for d in flat.train_u]
    assert [d.label for d in official.test] == [d.label for d in flat.test]


def test_semiaves_class_names_file_of_the_annotation_archive(tmp_path):
    annotation = os.path.join("semi_aves", "annotation")  # where semi-inat-2020's archive puts it
    miniature.semiaves(tmp_path, names_file="semi_aves_class_names.txt", names_folder=annotation)
    assert load("semiaves", tmp_path).classnames == [n.replace("_", " ") for n in miniature.SEMIAVES_SPECIES]


def test_check_dataset_takes_the_setting(tmp_path, capsys, monkeypatch):
    check = _check_script()
    miniature.cub(tmp_path)
    cub = catalogue.check_dataset("cub").cls
    monkeypatch.setattr(cub, "official", {"classes": 4, "train": 32, "val": 0, "test": 8})  # the replica's own numbers
    assert check.main(["cub", "3", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "setting 3 on cub is not one the papers report (5, 20)" in out and "copy matches" in out
    assert (tmp_path / "CUB_200_2011" / "splits" / "cub" / "id0.5_n3_seed1.json").exists()
    assert check.main(["cub", "three", "--root", str(tmp_path)]) == 2
    assert "labels per ID class" in capsys.readouterr().err
