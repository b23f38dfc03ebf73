"""Reading the images a dataset lists."""
import os
import os.path as osp

from PIL import Image

SPLITS = ("train_x", "train_u", "val", "test")


def read_image(path):
    """An RGB PIL image; a missing or unreadable file raises one error naming it."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except FileNotFoundError:
        raise FileNotFoundError(f"Image listed by the dataset is missing: {path} (check DATASET.ROOT)") from None
    except (OSError, Image.DecompressionBombError) as err:
        raise OSError(
            f"Cannot read image {path}: {err} (re-download the file, or run with --skip-bad-images to leave "
            "unreadable images out; they are listed in the output folder)"
        ) from None


def unreadable_reason(path):
    """None when the image decodes, else why it does not."""
    try:
        read_image(path)
    except OSError as err:
        return str(err).split(" (")[0]
    return None


def drop_unreadable(dataset, record_path):
    """Leave the images that do not decode out of every split of `dataset`, and list
    them (split, path, reason) in `record_path` (None: not written, a distributed run's
    other ranks). Returns that list."""
    skipped = []
    for split in SPLITS:
        items = getattr(dataset, split) or []
        kept = []
        for item in items:
            reason = unreadable_reason(item.impath)
            if reason is None:
                kept.append(item)
            else:
                skipped.append((split, item.impath, reason))
        if len(kept) != len(items):
            setattr(dataset, f"_{split}", kept)  # both engines' DatasetBase keep the lists there
    if record_path is None:
        return skipped
    os.makedirs(osp.dirname(osp.abspath(record_path)), exist_ok=True)
    with open(record_path, "w") as f:
        f.writelines(f"{split}\t{path}\t{reason}\n" for split, path, reason in skipped)
    print(f"Skipped {len(skipped)} unreadable images (--skip-bad-images), listed in {record_path}")
    return skipped
