"""LE-CLIP's data manager: labeled and unlabeled loaders with named views.

Used by LE-CLIP trainers on both engines. Batches are dicts: `img` (the first view),
`img_<view>` per view, `label` (LongTensor, or FloatTensor [B, C] for multi-hot
tuples), `index`, `impath`, `domain`.

Sampling is deterministic and never touches the global RNGs: every loader owns a
torch.Generator that draws the order and one augmentation seed per image, so an image's
views do not depend on NUM_WORKERS. The generators are seeded from (SEED, epoch,
loader); the trainer calls `set_epoch` at the start of every epoch, so an epoch's
batches depend on (SEED, epoch) only and a resumed run sees the same batches.

Distributed (torchrun): BATCH_SIZE is the global batch (ours: results do not depend on
the number of processes). Every rank draws the same global order and seeds, and reads its
shard of it (`distributed.shard_positions`): the k-th batches of the N ranks together are
the k-th batch of one process. A training loader keeps the whole global batches only, so
every rank makes the same number of steps; an evaluation loader keeps every image, and its
rows are gathered back with `distributed.gather_shards`.
"""
import math
import os.path as osp
import warnings

import torch
from tabulate import tabulate
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from leclip import distributed

from .images import drop_unreadable, read_image
from .seeding import epoch_seed, fresh_seed, local_rng
from .transforms import build_view

SAMPLERS = ("RandomSampler", "SequentialSampler")
# generator stream of each standard loader; loaders made later by make_loader use AD_HOC
STREAMS = {"train_x": 0, "train_u": 1, "val": 2, "test": 3}
AD_HOC = 4


def label_tensor(label):
    if isinstance(label, (tuple, list)):
        return torch.tensor(label, dtype=torch.float32)
    return torch.tensor(int(label), dtype=torch.long)


class SeededSampler(Sampler):
    """Yields (index, image seed) pairs; the order (shuffled or not) and the seeds are
    drawn from `generator` for all `num_items`, of which the first `keep` (default all)
    are used, and of those this rank's shard (`distributed.shard_positions`)."""

    def __init__(self, num_items, shuffle, generator, keep=None, shard_rank=0, shards=1):
        self.num_items = num_items
        self.shuffle = shuffle
        self.generator = generator
        self.positions = distributed.shard_positions(num_items if keep is None else keep, shard_rank, shards)

    def __iter__(self):
        n = self.num_items
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        seeds = torch.randint(0, 2**62, (n,), generator=self.generator)
        return iter(zip(order[self.positions].tolist(), seeds[self.positions].tolist()))

    def __len__(self):
        return len(self.positions)


class ViewDataset(Dataset):
    """Datum list -> dict(img, img_<view>..., label, index, impath, domain)."""

    def __init__(self, data_source, views):
        self.data_source = data_source
        self.views = views  # ordered {name: transform}

    def __len__(self):
        return len(self.data_source)

    def __getitem__(self, key):
        index, seed = key if isinstance(key, tuple) else (key, None)
        item = self.data_source[index]
        image = read_image(item.impath)
        output = {"label": label_tensor(item.label), "index": index, "impath": item.impath, "domain": item.domain}
        if seed is None:
            self._add_views(output, image)
        else:
            with local_rng(seed):
                self._add_views(output, image)
        return output

    def _add_views(self, output, image):
        for name, transform in self.views.items():
            output[f"img_{name}"] = transform(image)
        output["img"] = output[f"img_{next(iter(self.views))}"]


class DataManager:
    """Loaders over a built dataset (the engine's `build_dataset(cfg)` makes it)."""

    def __init__(self, cfg, dataset):
        self.cfg = cfg
        self.dataset = dataset
        self.seed = cfg.SEED if cfg.SEED >= 0 else distributed.broadcast_object(fresh_seed())
        self.epoch = 0
        self._generators = {}
        loader_cfg = cfg.DATALOADER
        for key, supported in (("K_TRANSFORMS", 1), ("RETURN_IMG0", False)):
            if loader_cfg[key] != supported or type(loader_cfg[key]) is not type(supported):
                raise ValueError(
                    f"DATALOADER.{key}={loader_cfg[key]!r} is not supported by LE-CLIP's DataManager: "
                    "list named views in DATALOADER.TRAIN_X.VIEWS / TRAIN_U.VIEWS instead"
                )
        if loader_cfg.get("SKIP_BAD_IMAGES", False):
            record = osp.join(cfg.OUTPUT_DIR, "skipped_images.txt") if distributed.is_main() else None
            self.skipped_images = drop_unreadable(dataset, record)
        x_cfg, u_cfg = loader_cfg.TRAIN_X, loader_cfg.TRAIN_U
        u_source = x_cfg if u_cfg.SAME_AS_X else u_cfg
        self.train_loader_x = self.make_loader(
            dataset.train_x, x_cfg.VIEWS, True, x_cfg.BATCH_SIZE, x_cfg.SAMPLER, stream="train_x"
        )
        self.train_loader_u = self.make_loader(
            dataset.train_u, u_cfg.VIEWS, True, u_source.BATCH_SIZE, u_source.SAMPLER, stream="train_u"
        )
        test_cfg = loader_cfg.TEST
        self.val_loader = self.make_loader(dataset.val, ("test",), False, test_cfg.BATCH_SIZE, test_cfg.SAMPLER, "val")
        self.test_loader = self.make_loader(
            dataset.test, ("test",), False, test_cfg.BATCH_SIZE, test_cfg.SAMPLER, "test"
        )
        self.num_classes = dataset.num_classes
        self.num_source_domains = len(cfg.DATASET.SOURCE_DOMAINS)
        self.lab2cname = dataset.lab2cname
        self.classnames = dataset.classnames
        if cfg.VERBOSE:
            self.show_dataset_summary()

    def make_loader(self, data_source, views=("test",), train=False, batch_size=None, sampler=None, stream=None):
        """A loader over `data_source` (None when it is empty).

        `views`: view names (or one name); `train`: drop the last incomplete batch when
        the set holds at least one full batch; `sampler`: RandomSampler (default when
        training) or SequentialSampler; `batch_size`: default DATALOADER.TEST.BATCH_SIZE,
        the global batch when distributed (each rank loads its share).
        """
        if not data_source:
            return None
        views = [views] if isinstance(views, str) else list(views)
        if not views:
            raise ValueError("A loader needs at least one view: set DATALOADER.TRAIN_X.VIEWS / TRAIN_U.VIEWS")
        sampler = sampler or ("RandomSampler" if train else "SequentialSampler")
        if sampler not in SAMPLERS:
            raise ValueError(
                f"Sampler {sampler!r} (DATALOADER.*.SAMPLER) is not available in LE-CLIP's DataManager; "
                f"use one of {SAMPLERS}"
            )
        batch_size = self.cfg.DATALOADER.TEST.BATCH_SIZE if batch_size is None else batch_size
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"Batch size {batch_size!r} (DATALOADER.*.BATCH_SIZE): use a positive integer")
        shards, n = distributed.world_size(), len(data_source)
        if train and shards > 1 and (batch_size % shards or n < shards):
            raise ValueError(
                f"{shards} processes share a global batch of {batch_size} over {n} images (DATALOADER.*.BATCH_SIZE is "
                f"the global batch): use a batch size that is a multiple of {shards}, on a set of at least {shards} "
                "images, or fewer processes"
            )
        keep = n - n % batch_size if train and n >= batch_size else n  # whole batches only when training
        if train and shards > 1 and keep % shards:
            warnings.warn(
                f"{n} images, fewer than the global batch of {batch_size}, do not split evenly over {shards} processes: "
                "the step's gradient is the mean of the processes' batch means, not the batch's mean as in one process",
                stacklevel=2,
            )
        generator = torch.Generator()
        generator.manual_seed(epoch_seed(self.seed, self.epoch, STREAMS.get(stream, AD_HOC)))
        if stream is not None:
            self._generators[stream] = generator
        return DataLoader(
            self.view_dataset(data_source, views),
            batch_size=math.ceil(batch_size / shards),
            sampler=SeededSampler(n, sampler == "RandomSampler", generator, keep, distributed.rank(), shards),
            num_workers=self.cfg.DATALOADER.NUM_WORKERS,
            pin_memory=torch.cuda.is_available() and self.cfg.USE_CUDA,
            generator=generator,  # worker seeds too come from the loader's own stream
        )

    def view_dataset(self, data_source, views):
        return ViewDataset(data_source, {name: build_view(self.cfg, name) for name in views})

    def batch(self, data_source, views=("test",)):
        """Every item of `data_source` in one batch (a loader's dict), read by this process
        alone, unsharded: a few images a trainer draws figures of. `views`: view names."""
        dataset = self.view_dataset(data_source, views)
        return default_collate([dataset[i] for i in range(len(dataset))])

    def set_epoch(self, epoch, seed=None):
        """Reseed every loader's generator from (seed, epoch); `seed` replaces self.seed."""
        if seed is not None:
            self.seed = seed
        self.epoch = epoch
        for stream, generator in self._generators.items():
            generator.manual_seed(epoch_seed(self.seed, epoch, STREAMS[stream]))

    def attach(self, trainer):
        """Give a trainer Dassl's loader attributes (train_loader_x, ..., lab2cname, dm)."""
        trainer.train_loader_x = self.train_loader_x
        trainer.train_loader_u = self.train_loader_u  # None without unlabeled data
        trainer.val_loader = self.val_loader  # None without val data
        trainer.test_loader = self.test_loader
        trainer.num_classes = self.num_classes
        trainer.num_source_domains = self.num_source_domains
        trainer.lab2cname = self.lab2cname
        trainer.dm = self

    def show_dataset_summary(self):
        cfg = self.cfg
        table = [["Dataset", cfg.DATASET.NAME]]
        if cfg.DATASET.SOURCE_DOMAINS:
            table.append(["Source", cfg.DATASET.SOURCE_DOMAINS])
        if cfg.DATASET.TARGET_DOMAINS:
            table.append(["Target", cfg.DATASET.TARGET_DOMAINS])
        table.append(["# classes", f"{self.num_classes:,}"])
        table.append(["# train_x", f"{len(self.dataset.train_x or []):,}"])
        for name in ("train_u", "val"):
            data = getattr(self.dataset, name)
            if data:
                table.append([f"# {name}", f"{len(data):,}"])
        table.append(["# test", f"{len(self.dataset.test or []):,}"])
        print(tabulate(table))
