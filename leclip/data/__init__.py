"""Data: dataset bases, splits, views, loaders. Engine-independent: both engines (and
every trainer) import it; it imports neither engine nor the `leclip.dassl` facade."""
from .bases import (  # noqa: F401
    DatasetNotFound,
    LEDatasetBase,
    MissingImagesError,
    MultiLabelDataset,
    OpenSetDataset,
    check_images,
    dataset_root,
    fingerprint,
    missing_files,
    multi_hot,
    read_lines,
    reject_set_keys,
    require_file,
)
from .datamanager import DataManager  # noqa: F401
from .datum import DatasetBase, Datum  # noqa: F401
from .images import read_image  # noqa: F401
from .transforms import build_transform, build_view, register_view, view_names  # noqa: F401
