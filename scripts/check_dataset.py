"""Validate a copy of a benchmark: counts per split against the official numbers (each
dataset class's `official`), and every missing file listed.

    python scripts/check_dataset.py KEY [SETTING] --root DATA   (KEY: dogs, cars, ..., nuswide)

Exit status 0 when the copy matches, 1 when it differs, 2 on bad input (an unknown key or
setting, a missing or broken dataset folder). The dataset is indexed in SETTING (default:
5 labels per ID class for task A, inout for Semi-Aves, unsup for multi-label data) with
seed 1, so the split cached on the way is one that runs of that setting use.
"""
import argparse
import sys

from leclip import catalogue
from leclip.data import MissingImagesError

FIELDS = (("classes", "classes"), ("train", "training images"), ("val", "validation images"), ("test", "test images"))
OUT_OF_CLASS = "out-of-class"  # the index Semi-Aves adds to its class list for U_out: not a class


def with_counts():
    """{key: dataset class} of the benchmarks with official counts."""
    return {key: data.cls for key, data in catalogue.datasets().items() if getattr(data.cls, "official", None)}


def default_setting(cls):
    """The first setting the papers report; of named settings the last, which reads every
    image (Semi-Aves' inout: U_out too)."""
    return cls.paper_settings[-1] if getattr(cls, "named_settings", None) else cls.paper_settings[0]


def found_counts(data):
    # a dataset that skips images missing on disk (NUS-WIDE) counts what its lists name
    missing = getattr(data, "missing_images", {})
    return {
        "classes": len(data.all_classnames) - data.all_classnames.count(OUT_OF_CLASS),
        "train": len(data.train_x) + len(data.train_u) + missing.get("Train", 0),
        "val": len(data.val or []),
        "test": len(data.test) + missing.get("Test", 0),
    }, missing


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    benchmarks = with_counts()
    parser.add_argument("key", choices=sorted(benchmarks))
    parser.add_argument("setting", nargs="?", help="the setting to index (default: 5, inout or unsup)")
    parser.add_argument("--root", default="./data", help="the folder holding the dataset's folder (DATASET.ROOT)")
    args = parser.parse_args(argv)
    from leclip.dassl import build_dataset

    setting = args.setting or default_setting(benchmarks[args.key])
    try:
        opts = catalogue.setting_opts(args.key, setting)
        note = catalogue.setting_note(args.key, setting)
        if note:
            print(note)
        cfg = catalogue.setup_cfg(dataset_config_file=catalogue.dataset_config(args.key), opts=opts, root=args.root,
                                  seed=1)
        data = build_dataset(cfg)
    except MissingImagesError as err:
        print(f"{len(err.missing)} listed files are missing:")
        print("\n".join(err.missing))
        return 1
    except (OSError, ValueError) as err:  # a missing folder or split file, a bad setting: bad input
        print(f"error: {err}", file=sys.stderr)
        return 2
    found, missing = found_counts(data)
    ok = True
    for field, name in FIELDS:
        expected, value = benchmarks[args.key].official[field], found[field]
        ok &= expected == value
        print(f"{name:>17}: {value:>7,}  (official {expected:,})  {'ok' if expected == value else 'DIFFERS'}")
    for split, count in missing.items():
        print(f"{split} images listed but missing on disk (skipped): {count:,}")
    print("copy matches the official numbers" if ok else "copy differs from the official numbers")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
