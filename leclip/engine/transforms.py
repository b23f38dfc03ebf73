"""Named image views. A loader returns one tensor per view it is asked for.

`test`: resize + center crop. `weak`: random resized crop + flip (CoOp's training
transform). `strong`: weak + torchvision RandAugment (FixMatch's strong view).
`jitter`: weak + ColorJitter(0.5, 0.5, 0.5, 0.5) (CCD's second view).
Trainers may add views with `register_view`.
"""
import torchvision.transforms as T

_INTERPOLATION = {
    "bilinear": T.InterpolationMode.BILINEAR,
    "bicubic": T.InterpolationMode.BICUBIC,
    "nearest": T.InterpolationMode.NEAREST,
}


def _interpolation(cfg):
    name = cfg.INPUT.INTERPOLATION
    if name not in _INTERPOLATION:
        raise ValueError(f"INPUT.INTERPOLATION={name!r}: use one of {sorted(_INTERPOLATION)}")
    return _INTERPOLATION[name]


def _finish(cfg, ops):
    return T.Compose(ops + [T.ToTensor(), T.Normalize(mean=cfg.INPUT.PIXEL_MEAN, std=cfg.INPUT.PIXEL_STD)])


def _test_ops(cfg):
    size = tuple(cfg.INPUT.SIZE)
    return [T.Resize(max(size), interpolation=_interpolation(cfg)), T.CenterCrop(size)]


def _weak_ops(cfg):
    return [
        T.RandomResizedCrop(tuple(cfg.INPUT.SIZE), scale=tuple(cfg.INPUT.RRCROP_SCALE), interpolation=_interpolation(cfg)),
        T.RandomHorizontalFlip(),
    ]


_VIEWS = {
    "test": lambda cfg: _finish(cfg, _test_ops(cfg)),
    "weak": lambda cfg: _finish(cfg, _weak_ops(cfg)),
    "strong": lambda cfg: _finish(
        cfg, _weak_ops(cfg) + [T.RandAugment(num_ops=cfg.INPUT.RANDAUGMENT_N, magnitude=cfg.INPUT.RANDAUGMENT_M)]
    ),
    "jitter": lambda cfg: _finish(cfg, _weak_ops(cfg) + [T.ColorJitter(0.5, 0.5, 0.5, 0.5)]),
}


def register_view(name, builder):
    """builder(cfg) -> transform taking a PIL image and returning a tensor."""
    _VIEWS[name] = builder


def build_view(cfg, name):
    if name not in _VIEWS:
        raise KeyError(f"Unknown view {name!r}; valid views: {', '.join(sorted(_VIEWS))}")
    return _VIEWS[name](cfg)


def build_transform(cfg, is_train=True, choices=None):
    """Dassl-style entry: the weak view for training, the test view otherwise."""
    return build_view(cfg, "weak" if is_train else "test")
