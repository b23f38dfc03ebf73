"""The dataset registry and `build_dataset`, with Dassl's interface.

`Datum` and `DatasetBase` are engine-independent and live in `leclip.data`.
"""
from leclip.data.datum import DatasetBase, Datum  # noqa: F401  Dassl's names, re-exported

from .registry import Registry

DATASET_REGISTRY = Registry("DATASET")


def build_dataset(cfg):
    avai_datasets = DATASET_REGISTRY.registered_names()
    if cfg.DATASET.NAME not in avai_datasets:
        raise KeyError(
            f"Unknown dataset {cfg.DATASET.NAME!r}; registered datasets: {', '.join(sorted(avai_datasets))}"
        )
    if cfg.VERBOSE:
        print(f"Loading dataset: {cfg.DATASET.NAME}")
    return DATASET_REGISTRY.get(cfg.DATASET.NAME)(cfg)
