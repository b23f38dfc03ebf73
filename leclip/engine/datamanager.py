"""LE-CLIP's data manager: labeled and unlabeled loaders with named views.

Used by LE-CLIP trainers on both engines. Shuffling draws from the global torch RNG,
which the trainer reseeds at every epoch, so an epoch's batches depend only on
(seed, epoch): a resumed run sees the same batches as an uninterrupted one.
"""
import torch
from PIL import Image
from tabulate import tabulate
from torch.utils.data import DataLoader, Dataset

from .transforms import build_view


def read_image(path):
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except FileNotFoundError:
        raise FileNotFoundError(f"Image listed by the dataset is missing: {path} (check DATASET.ROOT)") from None
    except OSError as err:
        raise OSError(f"Cannot read image {path}: {err} (re-download or remove the file)") from None


def label_tensor(label):
    if isinstance(label, (tuple, list)):
        return torch.tensor(label, dtype=torch.float32)
    return torch.tensor(label, dtype=torch.long)


class ViewDataset(Dataset):
    """Datum list -> dict(img, img_<view>..., label, index, impath)."""

    def __init__(self, data_source, views):
        self.data_source = data_source
        self.views = views  # ordered {name: transform}

    def __len__(self):
        return len(self.data_source)

    def __getitem__(self, index):
        item = self.data_source[index]
        image = read_image(item.impath)
        output = {"label": label_tensor(item.label), "index": index, "impath": item.impath}
        for i, (name, transform) in enumerate(self.views.items()):
            output[f"img_{name}"] = transform(image)
            if i == 0:
                output["img"] = output[f"img_{name}"]
        return output


class DataManager:
    def __init__(self, cfg, dataset=None):
        if dataset is None:
            from leclip.dassl import build_dataset  # lazy: the engine imports this module

            dataset = build_dataset(cfg)
        self.cfg = cfg
        self.dataset = dataset
        loader_cfg = cfg.DATALOADER
        batch_x = loader_cfg.TRAIN_X.BATCH_SIZE
        batch_u = batch_x if loader_cfg.TRAIN_U.SAME_AS_X else loader_cfg.TRAIN_U.BATCH_SIZE
        self.train_loader_x = self.make_loader(dataset.train_x, loader_cfg.TRAIN_X.VIEWS, True, batch_x)
        self.train_loader_u = self.make_loader(dataset.train_u, loader_cfg.TRAIN_U.VIEWS, True, batch_u)
        self.val_loader = self.make_loader(dataset.val)
        self.test_loader = self.make_loader(dataset.test)
        self.num_classes = dataset.num_classes
        self.lab2cname = dataset.lab2cname
        self.classnames = dataset.classnames
        if cfg.VERBOSE:
            self.show_dataset_summary()

    def make_loader(self, data_source, views=("test",), train=False, batch_size=None):
        """A loader over `data_source` (None when it is empty)."""
        if not data_source:
            return None
        if isinstance(views, str):
            views = (views,)
        batch_size = batch_size or self.cfg.DATALOADER.TEST.BATCH_SIZE
        dataset = ViewDataset(data_source, {name: build_view(self.cfg, name) for name in views})
        return DataLoader(
            dataset,
            batch_size=min(batch_size, len(data_source)),
            shuffle=train,
            drop_last=train,
            num_workers=self.cfg.DATALOADER.NUM_WORKERS,
            pin_memory=torch.cuda.is_available() and self.cfg.USE_CUDA,
        )

    def show_dataset_summary(self):
        rows = [["Dataset", self.cfg.DATASET.NAME], ["# classes", f"{self.num_classes:,}"]]
        for name in ("train_x", "train_u", "val", "test"):
            data = getattr(self.dataset, name)
            if data:
                rows.append([f"# {name}", f"{len(data):,}"])
        print(tabulate(rows))
