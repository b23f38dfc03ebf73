"""Named image views: a loader returns one normalised tensor per view it is asked for.

`test`: resize the short side to max(INPUT.SIZE) + center crop. `weak`: random resized
crop (INPUT.RRCROP_SCALE) + horizontal flip (CoOp's training transform). `strong`: weak
+ torchvision RandAugment(INPUT.RANDAUGMENT_N, INPUT.RANDAUGMENT_M) (FixMatch's strong
view). `jitter`: weak + ColorJitter(0.5, 0.5, 0.5, 0.5) (the colour jitter of CCD's released
second view; CCD's own is `ccd_jitter`, with TRAINER.CCD.JITTER).
Normalisation uses INPUT.PIXEL_MEAN / PIXEL_STD. Trainers add views with `register_view`.
Random views draw from torch's RNG only, which the DataManager seeds per image.
"""
import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms as T

# the input statistics of torchvision's ImageNet weights
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

INTERPOLATION_MODES = {
    "bilinear": T.InterpolationMode.BILINEAR,
    "bicubic": T.InterpolationMode.BICUBIC,
    "nearest": T.InterpolationMode.NEAREST,
}


def interpolation(cfg):
    name = cfg.INPUT.INTERPOLATION
    if name not in INTERPOLATION_MODES:
        raise ValueError(f"INPUT.INTERPOLATION={name!r}: use one of {sorted(INTERPOLATION_MODES)}")
    return INTERPOLATION_MODES[name]


def to_normalized_tensor(cfg, ops):
    """Compose PIL ops, then ToTensor and the cfg's normalisation."""
    return T.Compose(list(ops) + [T.ToTensor(), T.Normalize(mean=cfg.INPUT.PIXEL_MEAN, std=cfg.INPUT.PIXEL_STD)])


def center_crop_ops(cfg):
    size = tuple(cfg.INPUT.SIZE)
    return [T.Resize(max(size), interpolation=interpolation(cfg)), T.CenterCrop(size)]


def crop_flip_ops(cfg):
    return [
        T.RandomResizedCrop(
            tuple(cfg.INPUT.SIZE), scale=tuple(cfg.INPUT.RRCROP_SCALE), interpolation=interpolation(cfg)
        ),
        T.RandomHorizontalFlip(),
    ]


def _strong(cfg):
    randaugment = T.RandAugment(num_ops=cfg.INPUT.RANDAUGMENT_N, magnitude=cfg.INPUT.RANDAUGMENT_M)
    return to_normalized_tensor(cfg, crop_flip_ops(cfg) + [randaugment])


_VIEWS = {
    "test": lambda cfg: to_normalized_tensor(cfg, center_crop_ops(cfg)),
    "weak": lambda cfg: to_normalized_tensor(cfg, crop_flip_ops(cfg)),
    "strong": _strong,
    "jitter": lambda cfg: to_normalized_tensor(cfg, crop_flip_ops(cfg) + [T.ColorJitter(0.5, 0.5, 0.5, 0.5)]),
}


def register_view(name, builder, force=False):
    """Add a view: `builder(cfg)` returns a callable from a PIL image to a tensor.
    A name already taken raises unless `force=True`."""
    if name in _VIEWS and not force:
        raise KeyError(f"View {name!r} is already registered; pick another name or pass force=True")
    _VIEWS[name] = builder


def view_names():
    return sorted(_VIEWS)


def build_view(cfg, name):
    if name not in _VIEWS:
        raise KeyError(
            f"Unknown view {name!r}; valid views: {', '.join(view_names())} "
            "(check DATALOADER.TRAIN_X.VIEWS / TRAIN_U.VIEWS, or register_view() it)"
        )
    return _VIEWS[name](cfg)


def build_transform(cfg, is_train=True):
    """Dassl's entry point: the `weak` view for training, the `test` view otherwise."""
    return build_view(cfg, "weak" if is_train else "test")


def array_to_tensor(images, mean, std, size=None):
    """uint8 images [N, H, W, 3] -> float [N, 3, H, W] normalised with (mean, std), first
    resized (bicubic) to size x size when `size` is given: arrays rendered in memory, as a
    view would give them from files."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
    if size is not None:
        x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
