"""Where CCD's classifier gets its starting weights (`TRAINER.CCD.WEIGHTS`).

- a weights enum name of the torchvision backbone (`IMAGENET1K_V1`, as released for
  ResNet-50; `DEFAULT`, ...): loaded through torchvision's own cache
  (`$TORCH_HOME/hub/checkpoints`), downloaded there once when online. Offline with an
  empty cache, the message names the file, its URL and the folder to put it in;
- the path of a state dict of the backbone (its final classifier layer may be absent:
  CCD replaces it);
- a name another part of the package registers with `register` (the embedded world
  registers `embedded`, its world-pretrained stand-in for ImageNet weights), so this
  layer never imports the world;
- `random`: random initialisation, only when asked for by name.
"""
import os.path as osp

import torch
import torchvision

RANDOM = "random"
_SOURCES = {}  # name -> resolve(backbone) -> the path of its weights file


def register(name, resolve):
    """Make `name` a value of TRAINER.CCD.WEIGHTS: `resolve(backbone)` returns the path of
    the weights file for that torchvision backbone (or raises one clear error)."""
    _SOURCES[name] = resolve


def enum_names(backbone):
    return list(torchvision.models.get_model_weights(backbone).__members__)


def _hint(backbone):
    return (
        f"set TRAINER.CCD.WEIGHTS to one of {backbone!r}'s torchvision weights ({', '.join(enum_names(backbone))}), "
        f"the path of a state dict, {', '.join(repr(n) for n in sorted(_SOURCES))}"
        f"{', ' if _SOURCES else ''}or {RANDOM!r} for random initialisation"
    )


def _from_enum(backbone, name):
    weights = torchvision.models.get_model_weights(backbone)[name]
    folder = osp.join(torch.hub.get_dir(), "checkpoints")
    file = osp.basename(weights.url)
    try:
        return weights.get_state_dict(progress=False, check_hash=True)
    except (OSError, RuntimeError) as error:  # URLError is an OSError; a bad hash a RuntimeError
        raise FileNotFoundError(
            f"TRAINER.CCD.WEIGHTS={name!r}: torchvision's {backbone} {name} weights ({file}) are not in its cache "
            f"{folder} and could not be downloaded ({error}). Download {weights.url} on a machine with internet "
            f"and copy it to {folder} (or set $TORCH_HOME), or give TRAINER.CCD.WEIGHTS a local path"
        ) from None


def _from_file(backbone, path):
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"Classifier weights {path!r} do not exist: {_hint(backbone)}") from None
    except Exception as error:  # any unreadable file: pickle, zip or format errors
        raise ValueError(f"Classifier weights {path!r} could not be read ({error}): {_hint(backbone)}") from None
    if not isinstance(state, dict):
        raise ValueError(f"Classifier weights {path!r} hold a {type(state).__name__}, not a state dict: {_hint(backbone)}")
    return state


def state_dict(backbone, spec):
    """(state dict, where it came from) of torchvision model `backbone` for a WEIGHTS value
    `spec`; (None, RANDOM) for random initialisation."""
    if spec == RANDOM:
        return None, RANDOM
    if not spec:
        raise ValueError(f"TRAINER.CCD.WEIGHTS is empty: {_hint(backbone)}")
    if spec in _SOURCES:
        path = _SOURCES[spec](backbone)
        return _from_file(backbone, path), path
    if spec in enum_names(backbone):
        return _from_enum(backbone, spec), f"torchvision {spec}"
    if osp.sep not in spec and not osp.exists(spec) and spec.isupper():
        raise ValueError(f"TRAINER.CCD.WEIGHTS={spec!r} is not a torchvision weights name of {backbone!r}: {_hint(backbone)}")
    return _from_file(backbone, spec), spec


def load_into(model, trunk, backbone, spec):
    """Load the WEIGHTS `spec` into torchvision `model`; keys only its final layer uses may
    be absent (the trunk never reads that layer). Returns where they came from."""
    state, source = state_dict(backbone, spec)
    if state is None:
        return source
    trunk_tensors = {id(t) for t in trunk.state_dict(keep_vars=True).values()}
    needed = {k for k, t in model.state_dict(keep_vars=True).items() if id(t) in trunk_tensors}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or needed.intersection(missing):
            raise RuntimeError(f"missing keys {sorted(needed.intersection(missing))}, unexpected keys {sorted(unexpected)}")
    except RuntimeError as error:
        raise ValueError(f"Classifier weights {source!r} do not fit {backbone!r} ({error}): {_hint(backbone)}") from None
    return source
