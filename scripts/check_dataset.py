"""Validate a copy of a benchmark: counts per split against the official numbers, and
every missing file listed.

    python scripts/check_dataset.py KEY --root DATA        (KEY: dogs, cars, ..., nuswide)
"""
import argparse
import sys

from leclip import harness
from leclip.dataset_base import MissingImagesError

# official numbers: (classes, training pool, test); task A pools include Aircraft's val
OFFICIAL = {
    "dogs": (120, 12000, 8580),
    "cars": (196, 8144, 8041),
    "cub": (200, 5994, 5794),
    "aircraft": (100, 6667, 3333),
    "semiaves": (200, 3959 + 26640, 8000),  # setting "in": l_train + U_in; val 2000
    "voc2007": (20, 5011, 4952),
    "voc2012": (20, 5717, 5823),
    "coco": (80, 82081, 40137),  # images with at least one object
    "nuswide": (81, 161789, 107859),  # as listed; many copies miss some images
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("key", choices=sorted(OFFICIAL))
    parser.add_argument("--root", default="./data", help="the folder holding the dataset's folder (DATASET.ROOT)")
    args = parser.parse_args(argv)
    from leclip.dassl import build_dataset

    task = harness.check_dataset(args.key)[1]
    setting = "in" if args.key == "semiaves" else ("unsup" if task == "BC" else "1")
    cfg = harness.setup_cfg(
        dataset_config_file=harness.dataset_config(args.key),
        opts=harness.setting_opts(args.key, setting),
        root=args.root,
        seed=1,
    )
    try:
        data = build_dataset(cfg)
    except MissingImagesError as err:
        print(f"{len(err.missing)} listed files are missing:")
        print("\n".join(err.missing))
        return 1
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}")
        return 1
    classes, pool, test = OFFICIAL[args.key]
    found = (len(getattr(data, "all_classnames", data.classnames)) - (args.key == "semiaves"),
             len(data.train_x) + len(data.train_u), len(data.test))
    ok = True
    for name, expected, value in zip(("classes", "training images", "test images"), (classes, pool, test), found):
        status = "ok" if expected == value else "DIFFERS"
        ok &= expected == value
        print(f"{name:>16}: {value:>7,}  (official {expected:,})  {status}")
    print("copy matches the official numbers" if ok else "copy differs from the official numbers")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
