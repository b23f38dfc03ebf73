"""Validate a copy of a benchmark: counts per split against the official numbers, and
every missing file listed.

    python scripts/check_dataset.py KEY [SETTING] --root DATA   (KEY: dogs, cars, ..., nuswide)

Exit status 0 when the copy matches, 1 when it differs, 2 on bad arguments. The dataset
is indexed in SETTING (default: 5 labels per ID class for task A, inout for Semi-Aves,
unsup for multi-label data) with seed 1, so the split cached on the way is one that
runs of that setting use.
"""
import argparse
import sys

from leclip import harness
from leclip.data import MissingImagesError

# official numbers: classes, training images (task A: the whole pool, Aircraft train + val;
# Semi-Aves: l_train + U_in + U_out), validation images, test images
OFFICIAL = {
    "dogs": (120, 12000, 0, 8580),
    "cars": (196, 8144, 0, 8041),
    "cub": (200, 5994, 0, 5794),
    "aircraft": (100, 3334 + 3333, 0, 3333),
    "semiaves": (200, 3959 + 26640 + 122208, 2000, 8000),
    "voc2007": (20, 5011, 0, 4952),
    "voc2012": (20, 5717, 0, 5823),
    "coco": (80, 82081, 0, 40137),  # images with at least one object
    "nuswide": (81, 161789, 0, 107859),  # as listed; most copies miss some images
}
DEFAULT_SETTINGS = {"semiaves": "inout", "voc2007": "unsup", "voc2012": "unsup", "coco": "unsup", "nuswide": "unsup"}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("key", choices=sorted(OFFICIAL))
    parser.add_argument("setting", nargs="?", help="the setting to index (default: 5, inout or unsup)")
    parser.add_argument("--root", default="./data", help="the folder holding the dataset's folder (DATASET.ROOT)")
    args = parser.parse_args(argv)
    from leclip.dassl import build_dataset

    setting = args.setting or DEFAULT_SETTINGS.get(args.key, "5")
    try:
        opts = harness.setting_opts(args.key, setting)
    except harness.HarnessError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    note = harness.setting_note(args.key, setting)
    if note:
        print(note)
    cfg = harness.setup_cfg(dataset_config_file=harness.dataset_config(args.key), opts=opts, root=args.root, seed=1)
    try:
        data = build_dataset(cfg)
    except MissingImagesError as err:
        print(f"{len(err.missing)} listed files are missing:")
        print("\n".join(err.missing))
        return 1
    except (OSError, ValueError) as err:
        print(f"error: {err}")
        return 1
    # NUS-WIDE skips images missing on disk: compare what its lists name
    missing = getattr(data, "missing_images", {})
    found = (
        len(data.all_classnames) - (args.key == "semiaves"),  # less Semi-Aves' out-of-class index
        len(data.train_x) + len(data.train_u) + missing.get("Train", 0),
        len(data.val or []),
        len(data.test) + missing.get("Test", 0),
    )
    ok = True
    for name, expected, value in zip(("classes", "training images", "validation images", "test images"), OFFICIAL[args.key], found):
        ok &= expected == value
        print(f"{name:>17}: {value:>7,}  (official {expected:,})  {'ok' if expected == value else 'DIFFERS'}")
    for split, count in missing.items():
        print(f"{split} images listed but missing on disk (skipped): {count:,}")
    print("copy matches the official numbers" if ok else "copy differs from the official numbers")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
