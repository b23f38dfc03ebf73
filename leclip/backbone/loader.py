"""Load CLIP by name or path; build it from any state dict's shapes.

Official weights (`ViT-B/16`, `RN50`, ...) are read from the clip cache folder
(`~/.cache/clip`, or `$LECLIP_CLIP_CACHE`); nothing is downloaded. Embedded models
(`synth-vit`) ship in `leclip/world/assets/`. Models are returned in fp32: the CLIP
layer never converts to fp16 (AMP does that on CUDA only).
"""
import os
import os.path as osp
import warnings
import zipfile

import torch
from clip import clip as clip_api  # only for the weights' names and URLs: forks change its model class

from .model import CLIP

from leclip.engine.checkpoint import CheckpointError, read_torch_file

ASSETS = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), "world", "assets")
EMBEDDED_MODELS = {"synth-vit": osp.join(ASSETS, "synth-vit.pt")}


class MissingWeightsError(FileNotFoundError):
    pass


class BadWeightsError(ValueError):
    """A weights file that exists but cannot be used (empty, text, corrupt, pickled objects)."""


def cache_dir():
    return os.environ.get("LECLIP_CLIP_CACHE") or osp.expanduser("~/.cache/clip")


def resolve_checkpoint(name, path=""):
    """File holding the weights of backbone `name` (or `path` when given)."""
    if path:
        if not osp.isfile(path):
            raise MissingWeightsError(f"MODEL.BACKBONE.PATH={path!r} does not exist: give the path of a CLIP checkpoint")
        return path
    if name in EMBEDDED_MODELS:
        file = EMBEDDED_MODELS[name]
        if not osp.isfile(file):
            raise MissingWeightsError(
                f"Embedded CLIP {name!r} not found at {file}: rebuild it with "
                "`python scripts/pretrain_synth_clip.py`"
            )
        return file
    if name in clip_api._MODELS:
        url = clip_api._MODELS[name]
        folder = cache_dir()
        file = osp.join(folder, osp.basename(url))
        if not osp.isfile(file):
            raise MissingWeightsError(
                f"CLIP weights for {name!r} not found: expected {osp.basename(url)} in {folder} "
                f"(searched; set $LECLIP_CLIP_CACHE or MODEL.BACKBONE.PATH to use another place). "
                f"Download it from the official source {url} on a machine with internet and copy it there."
            )
        return file
    valid = sorted(clip_api._MODELS) + sorted(EMBEDDED_MODELS)
    raise KeyError(f"Unknown CLIP backbone {name!r} (MODEL.BACKBONE.NAME); valid names: {', '.join(valid)}")


def is_torchscript(file):
    """Official OpenAI CLIP files are TorchScript archives: zip files with constants.pkl."""
    if not zipfile.is_zipfile(file):
        return False
    with zipfile.ZipFile(file) as archive:
        return any(name.split("/")[-1] == "constants.pkl" for name in archive.namelist())


def _read(file):
    """(state_dict, meta) from our format, a plain state dict or an official JIT archive.

    Our files and plain state dicts are read with `torch.load(weights_only=True)`, so a
    crafted file never runs code; a TorchScript archive is read by `torch.jit.load`, whose
    restricted loader builds TorchScript modules and tensors only."""
    fix = "give an official CLIP checkpoint (a TorchScript .pt from the clip cache) or a state dict saved by torch.save"
    if is_torchscript(file):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                return torch.jit.load(file, map_location="cpu").state_dict(), {}
        except RuntimeError as err:
            reason = str(err).splitlines()[0]
            raise BadWeightsError(f"CLIP weights {file} are truncated or corrupt ({reason}): {fix}") from None
    try:
        obj = read_torch_file(file, "CLIP weights", fix)
    except CheckpointError as err:
        raise BadWeightsError(str(err)) from None
    if isinstance(obj, dict) and "state_dict" in obj:
        obj, meta = obj["state_dict"], obj.get("meta", {})
    else:
        meta = {}
    if not isinstance(obj, dict) or "text_projection" not in obj:
        raise BadWeightsError(f"CLIP weights {file} hold no CLIP state dict (no text_projection): {fix}")
    return obj, meta


def official_heads(width):
    """OpenAI's head count for an attention `width` wide: one head per 64 channels."""
    return max(1, width // 64)


def make_clip(
    embed_dim, resolution, vision_layers, vision_width, patch, vision_heads,
    context_length, vocab_size, text_width, text_heads, text_layers,
):
    """LE-CLIP's CLIP; `vision_heads` None gives OpenAI's count (a ResNet's attention
    pool is 32 * vision_width wide)."""
    resnet = isinstance(vision_layers, (tuple, list))
    if not vision_heads:
        vision_heads = official_heads(32 * vision_width if resnet else vision_width)
    return CLIP(
        embed_dim, resolution, vision_layers, vision_width, patch, vision_heads,
        context_length, vocab_size, text_width, text_heads, text_layers,
    )


def build_clip(state_dict, meta=None):
    """A fp32 CLIP shaped after `state_dict` (heads from `meta` if given)."""
    meta = meta or {}
    sd = {k: v for k, v in state_dict.items() if k not in ("input_resolution", "context_length", "vocab_size")}
    vit = "visual.proj" in sd
    embed_dim = sd["text_projection"].shape[1]
    context_length = sd["positional_embedding"].shape[0]
    vocab_size = sd["token_embedding.weight"].shape[0]
    text_width = sd["ln_final.weight"].shape[0]
    text_layers = len({k.split(".")[2] for k in sd if k.startswith("transformer.resblocks")})
    text_heads = meta.get("text_heads", official_heads(text_width))
    if vit:
        vision_width = sd["visual.conv1.weight"].shape[0]
        vision_layers = len([k for k in sd if k.startswith("visual.") and k.endswith(".attn.in_proj_weight")])
        patch = sd["visual.conv1.weight"].shape[-1]
        grid = round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5)
        resolution = patch * grid
    else:
        vision_layers = tuple(
            len({k.split(".")[2] for k in sd if k.startswith(f"visual.layer{b}")}) for b in (1, 2, 3, 4)
        )
        vision_width = sd["visual.layer1.0.conv1.weight"].shape[0]
        patch = None
        resolution = round((sd["visual.attnpool.positional_embedding"].shape[0] - 1) ** 0.5) * 32
    model = make_clip(
        embed_dim, resolution, vision_layers, vision_width, patch, meta.get("vision_heads"),
        context_length, vocab_size, text_width, text_heads, text_layers,
    )
    model.load_state_dict(sd)  # strict; fp16 weights are copied into the fp32 parameters
    return model.eval()


def check_input_size(model, size, name):
    """One clear error when INPUT.SIZE is not the image size the CLIP model was built for
    (its position embeddings fix it)."""
    resolution = model.visual.input_resolution
    if tuple(size) != (resolution, resolution):
        raise ValueError(
            f"INPUT.SIZE={tuple(size)} but the CLIP backbone {name!r} takes {resolution}x{resolution} images: "
            f"set INPUT.SIZE ({resolution}, {resolution})"
        )


def load_clip(name, path="", device="cpu"):
    state_dict, meta = _read(resolve_checkpoint(name, path))
    return build_clip(state_dict, meta).to(device)


def random_clip(
    embed_dim=32,
    image_resolution=32,
    vision_layers=2,
    vision_width=64,
    vision_patch_size=8,
    context_length=16,
    transformer_width=32,
    transformer_heads=2,
    transformer_layers=2,
    vision_heads=None,
    vocab_size=49408,
    seed=0,
):
    """A small random fp32 CLIP (deterministic per seed) for tests and benchmarks."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = make_clip(
            embed_dim, image_resolution, vision_layers, vision_width, vision_patch_size, vision_heads,
            context_length, vocab_size, transformer_width, transformer_heads, transformer_layers,
        )
        # a second draw, as the shipped synth-vit was initialised: the same seed still
        # gives its exact starting weights (scripts/pretrain_synth_clip.py reproduces it)
        model.initialize_parameters()
    return model.eval()


def save_clip(model, path, meta=None):
    """fp16 weights plus the head counts, readable by `load_clip(path=...)`."""
    meta = dict(meta or {})
    if hasattr(model.visual, "transformer"):
        meta.setdefault("vision_heads", model.visual.transformer.resblocks[0].attn.num_heads)
    meta.setdefault("text_heads", model.transformer.resblocks[0].attn.num_heads)
    state_dict = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    torch.save({"state_dict": state_dict, "meta": meta}, path)
