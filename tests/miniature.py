"""Miniature replicas of each benchmark's official on-disk layout (real .mat, XML,
JSON and text files, JPEGs), written into a temporary folder by the tests.

Every builder takes `size` (width, height) of its JPEGs: tiny by default, the
benchmark's typical size in the smoke matrix (`REAL_SIZES`)."""
import json
import os

import numpy as np
from PIL import Image
from scipy.io import savemat


# a typical image of each benchmark (width, height): what the loaders decode and crop
REAL_SIZES = {
    "dogs": (500, 375), "cars": (700, 466), "cub": (500, 363), "aircraft": (1024, 700), "semiaves": (500, 333),
    "voc2007": (500, 375), "voc2012": (500, 375), "coco": (640, 480), "nuswide": (240, 180),
}


def jpeg(path, seed=0, size=(8, 8)):
    """Random pixels; a large image is smooth noise scaled up, so it stays a small file."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    width, height = size
    coarse = (max(1, height // 16), max(1, width // 16)) if width > 64 else (height, width)
    pixels = np.random.default_rng(seed).integers(0, 255, size=(*coarse, 3), dtype=np.uint8)
    Image.fromarray(pixels).resize((width, height), Image.BILINEAR).save(path, format="JPEG")


def cell(strings):
    """A MATLAB cell column of strings, as scipy writes and reads them."""
    out = np.empty((len(strings), 1), dtype=object)
    for i, s in enumerate(strings):
        out[i, 0] = np.array([s])
    return out


def write_lines(path, lines):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


DOG_FOLDERS = ["n02085620-Chihuahua", "n02085782-Japanese_spaniel", "n02085936-Maltese_dog", "n02086079-Pekinese"]


def dogs(root, train_per_class=8, test_per_class=2, lists="lists", size=(8, 8)):
    """`lists`: the folder of the .mat lists under stanford_dogs/ ("" = the official
    lists.tar extracted in place, with its file_list.mat)."""
    base = os.path.join(root, "stanford_dogs")
    everything = ([], [])
    for split, count in (("train", train_per_class), ("test", test_per_class)):
        files, labels = [], []
        for k, folder in enumerate(DOG_FOLDERS):
            for i in range(count):
                rel = f"{folder}/{split}_{i}.jpg"
                jpeg(os.path.join(base, "Images", rel), k * 100 + i, size=size)
                files.append(rel)
                labels.append(k + 1)  # 1-based, as in the official lists
        os.makedirs(os.path.join(base, lists), exist_ok=True)
        savemat(os.path.join(base, lists, f"{split}_list.mat"),
                {"file_list": cell(files), "labels": np.array(labels, dtype=np.uint8)[:, None]})
        everything[0].extend(files)
        everything[1].extend(labels)
    if not lists:
        savemat(os.path.join(base, "file_list.mat"),
                {"file_list": cell(everything[0]), "labels": np.array(everything[1], dtype=np.uint8)[:, None]})


CAR_NAMES = ["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Tesla Model S Sedan 2012", "smart fortwo Convertible 2012"]


def _car_annotations(names_and_classes):
    annotations = np.zeros((1, len(names_and_classes)), dtype=[("bbox_x1", "O"), ("class", "O"), ("fname", "O")])
    for i, (fname, label) in enumerate(names_and_classes):
        annotations[0, i]["bbox_x1"] = np.array([[1]], dtype=np.uint8)
        annotations[0, i]["class"] = np.array([[label]], dtype=np.uint8)
        annotations[0, i]["fname"] = np.array([fname])
    return annotations


def cars(root, train_per_class=8, test_per_class=2, size=(8, 8)):
    base = os.path.join(root, "stanford_cars")
    os.makedirs(os.path.join(base, "devkit"), exist_ok=True)
    names = np.empty((1, len(CAR_NAMES)), dtype=object)
    for k, name in enumerate(CAR_NAMES):
        names[0, k] = np.array([name])
    savemat(os.path.join(base, "devkit", "cars_meta.mat"), {"class_names": names})
    for split, count, annos in (
        ("train", train_per_class, os.path.join(base, "devkit", "cars_train_annos.mat")),
        ("test", test_per_class, os.path.join(base, "cars_test_annos_withlabels.mat")),
    ):
        items = []
        for k in range(len(CAR_NAMES)):
            for i in range(count):
                fname = f"{len(items) + 1:05d}.jpg"
                jpeg(os.path.join(base, f"cars_{split}", fname), len(items), size=size)
                items.append((fname, k + 1))
        savemat(annos, {"annotations": _car_annotations(items)})


CUB_CLASSES = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross", "004.Groove_billed_Ani"]


def cub(root, train_per_class=8, test_per_class=2, size=(8, 8)):
    base = os.path.join(root, "CUB_200_2011")
    images, labels, split = [], [], []
    image_id = 0
    for k, cls in enumerate(CUB_CLASSES):
        for i in range(train_per_class + test_per_class):
            image_id += 1
            rel = f"{cls}/{cls.split('.')[1]}_{i}.jpg"
            jpeg(os.path.join(base, "images", rel), image_id, size=size)
            images.append(f"{image_id} {rel}")
            labels.append(f"{image_id} {k + 1}")
            split.append(f"{image_id} {1 if i < train_per_class else 0}")
    write_lines(os.path.join(base, "images.txt"), images)
    write_lines(os.path.join(base, "image_class_labels.txt"), labels)
    write_lines(os.path.join(base, "train_test_split.txt"), split)
    write_lines(os.path.join(base, "classes.txt"), [f"{k + 1} {c}" for k, c in enumerate(CUB_CLASSES)])


AIRCRAFT_VARIANTS = ["707-320", "A300B4", "Cessna 172", "F-16A/B"]


def aircraft(root, per_split=4, layout="fgvc_aircraft", size=(8, 8)):
    base = os.path.join(root, layout)
    write_lines(os.path.join(base, "variants.txt"), AIRCRAFT_VARIANTS)
    image_id = 1000000
    for split in ("train", "val", "test"):
        lines = []
        for variant in AIRCRAFT_VARIANTS:
            for _ in range(per_split if split != "test" else 2):
                image_id += 1
                jpeg(os.path.join(base, "images", f"{image_id}.jpg"), image_id, size=size)
                lines.append(f"{image_id} {variant}")
        write_lines(os.path.join(base, f"images_variant_{split}.txt"), lines)


SEMIAVES_SPECIES = ["Charadrius_semipalmatus", "Tachycineta_thalassina", "Jacana_spinosa", "Falco_peregrinus"]


def semiaves(root, classes=4, names=True, oracle=True, names_file="semi_aves_species_names.txt", names_folder="",
             size=(8, 8)):
    """The authors' split files: l_train 3, val 1, test 2 per class; U_in 6, U_out 5 images.

    With `names`, `names_file` ("k Genus_species" per line, as shipped) in `names_folder`
    ("" = beside semi_aves/, as ssl-evaluation ships semi_aves_species_names.txt;
    "semi_aves/annotation" = where semi-inat-2020's archive puts semi_aves_class_names.txt);
    with `oracle`, u_train_in_oracle.txt (U_in image i is class i % classes).
    """
    base = os.path.join(root, "semi_aves")
    counts = {"l_train": 3, "val": 1, "test": 2}
    for split, per_class in counts.items():
        lines = []
        for k in range(classes):
            for i in range(per_class):
                rel = f"trainval_images/{k}/{split}_{i}.jpg" if split != "test" else f"test/{k}_{i}.jpg"
                jpeg(os.path.join(base, rel), k * 10 + i, size=size)
                lines.append(f"{rel} {k}")
        write_lines(os.path.join(base, f"{split}.txt"), lines)
    for split, count in (("u_train_in", 6), ("u_train_out", 5)):
        lines = []
        for i in range(count):
            rel = f"{split}/{i}.jpg"
            jpeg(os.path.join(base, rel), i, size=size)
            lines.append(f"{rel} -1")
        write_lines(os.path.join(base, f"{split}.txt"), lines)
    if oracle:  # listed in another order than u_train_in.txt, as the authors' file is
        write_lines(os.path.join(base, "u_train_in_oracle.txt"), [f"u_train_in/{i}.jpg {i % classes}" for i in reversed(range(6))])
    if names:
        names_path = os.path.join(root, names_folder, names_file)
        write_lines(names_path, [f"{k} {n}" for k, n in enumerate(SEMIAVES_SPECIES[:classes])])


def voc_annotation(objects):
    parts = ["<annotation><filename>x.jpg</filename>"]
    for name, difficult in objects:
        parts.append(f"<object><name>{name}</name><difficult>{int(difficult)}</difficult></object>")
    return "".join(parts) + "</annotation>"


def cycled(names, count, per_image):
    """`count` scenes of `per_image` names each, cycling through `names` (every name used)."""
    return [[names[(per_image * i + j) % len(names)] for j in range(per_image)] for i in range(count)]


def voc(root, year="2007", splits=("trainval", "test"), size=(8, 8), images=0):
    """Six images per split; image ...3 of each split has only a difficult 'dog'. With
    `images`, that many per split instead, three of the 20 classes each."""
    from leclip.datasets.voc import CLASSES

    base = os.path.join(root, "VOCdevkit", f"VOC{year}")
    os.makedirs(os.path.join(base, "Annotations"), exist_ok=True)
    scenes = [[("person", 0), ("dog", 0)], [("car", 0)], [("cat", 0), ("sofa", 0)],
              [("dog", 1)], [("person", 0), ("bicycle", 0)], [("tvmonitor", 0), ("person", 0)]]
    if images:
        scenes = [[(name, 0) for name in scene] for scene in cycled(CLASSES, images, 3)]
    for s, split in enumerate(splits):
        ids = []
        for i, objects in enumerate(scenes):
            image_id = f"{year}_{s}{i:05d}"
            ids.append(image_id)
            jpeg(os.path.join(base, "JPEGImages", f"{image_id}.jpg"), i, size=size)
            with open(os.path.join(base, "Annotations", f"{image_id}.xml"), "w") as f:
                f.write(voc_annotation(objects))
        write_lines(os.path.join(base, "ImageSets", "Main", f"{split}.txt"), ids)


COCO_CATEGORIES = [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}, {"id": 90, "name": "toothbrush"}]


def coco(root, size=(8, 8), classes=0, images=0):
    """train: 5 images (one without any object); val: 3 images. With `classes` and
    `images`: that many categories (ids with gaps, as COCO's) and train images, six
    objects each, and a quarter as many val images."""
    base = os.path.join(root, "coco")
    categories = COCO_CATEGORIES
    plans = {
        "train": [[1], [3, 90], [1, 1], [], [90]],
        "val": [[3], [1, 90], [90]],
    }
    if classes:
        categories = [{"id": k + 1 + k // 10, "name": f"object {k}"} for k in range(classes)]
        ids = [c["id"] for c in categories]
        plans = {"train": cycled(ids, images, 6), "val": cycled(ids[::-1], max(1, images // 4), 6)}
    for split, plan in plans.items():
        images, annotations = [], []
        for i, cats in enumerate(plan):
            name = f"COCO_{split}2014_{i:012d}.jpg"
            jpeg(os.path.join(base, f"{split}2014", name), i, size=size)
            images.append({"id": 100 + i, "file_name": name})
            for cat in cats:
                annotations.append({"id": len(annotations) + 1, "image_id": 100 + i, "category_id": cat})
        os.makedirs(os.path.join(base, "annotations"), exist_ok=True)
        with open(os.path.join(base, "annotations", f"instances_{split}2014.json"), "w") as f:
            json.dump({"images": images, "annotations": annotations, "categories": categories}, f)


NUS_CONCEPTS = ["animal", "sky", "water"]


def nuswide(root, missing=1, official=False, size=(8, 8), concepts=0, images=0):
    """train: 6 listed images (the last `missing` absent on disk); test: 3. `official`:
    the download's own folders, Groundtruth/TrainTestLabels/ and ConceptsList/. With
    `concepts` and `images`: that many concepts and train images (six concepts each),
    and a quarter as many test images."""
    base = os.path.join(root, "nuswide")
    labels = os.path.join("Groundtruth", "TrainTestLabels") if official else "TrainTestLabels"
    names = [f"concept{k}" for k in range(concepts)] if concepts else NUS_CONCEPTS
    write_lines(os.path.join(base, "ConceptsList" if official else "", "Concepts81.txt"), names)
    counts = (("Train", images), ("Test", max(1, images // 4))) if concepts else (("Train", 6), ("Test", 3))
    for split, count in counts:
        lines = []
        for i in range(count):
            folder = "animal" if i % 2 else "sky"
            lines.append(f"{folder}\\{split}_{i}.jpg")
            if not (split == "Train" and i >= count - missing):
                jpeg(os.path.join(base, "Flickr", folder, f"{split}_{i}.jpg"), i, size=size)
        write_lines(os.path.join(base, "ImageList", f"{split}Imagelist.txt"), lines)
        positives = [set(scene) for scene in cycled(names, count, 6)] if concepts else None
        for c, concept in enumerate(names):
            column = [concept in positives[i] if concepts else (i + c) % 3 == 0 for i in range(count)]
            write_lines(os.path.join(base, labels, f"Labels_{concept}_{split}.txt"), [str(int(v)) for v in column])
