"""Named image views: a loader returns one normalised tensor per view it is asked for.

`test`: resize the short side to max(INPUT.SIZE) + center crop. `weak`: random resized
crop (INPUT.RRCROP_SCALE) + horizontal flip (CoOp's training transform). `strong`: weak
+ torchvision RandAugment(INPUT.RANDAUGMENT_N, INPUT.RANDAUGMENT_M) (FixMatch's strong
view). `jitter`: weak + ColorJitter(0.5, 0.5, 0.5, 0.5) (CCD's second view).
Normalisation uses INPUT.PIXEL_MEAN / PIXEL_STD. Trainers add views with `register_view`.
Random views draw from torch's RNG only, which the DataManager seeds per image.
"""
import torchvision.transforms as T

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
