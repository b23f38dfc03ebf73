"""CLIP's image tower at any input size, for CCD's released geometry (as released).

The release feeds its RN50x64 the whole image squashed to 640 x 640 and crops whose long
side is 640, at their own aspect, with the position embeddings of the attention pool (or
of a ViT's patches) resampled bilinearly to the input's grid: the first row (the mean
token / class token) kept, the grid of the others resized. `encode_any_size` does the
same without changing the model: the resampled embedding is passed to the tower for one
call (`torch.func.functional_call`). At the model's own input size it is the plain
`encode_image`.
"""
import torch
import torch.nn.functional as F


def _grid(visual, height, width):
    """(name of the position-embedding parameter in `visual`, grid (h, w) for the input)."""
    if hasattr(visual, "attnpool"):  # ModifiedResNet: a stride-32 feature map
        return "attnpool.positional_embedding", (height // 32, width // 32)
    patch = visual.conv1.kernel_size[0]
    return "positional_embedding", (height // patch, width // patch)


def resample_positions(embedding, grid):
    """[1 + g*g, D] -> [1 + h*w, D] for grid (h, w): the first row kept, the g x g rows
    resized bilinearly (align_corners False)."""
    first, rest = embedding[:1], embedding[1:]
    side = round(rest.shape[0] ** 0.5)
    square = rest.t().reshape(1, -1, side, side)
    resized = F.interpolate(square.float(), size=tuple(grid), mode="bilinear", align_corners=False)
    return torch.cat([first, resized.reshape(rest.shape[1], -1).t().to(embedding.dtype)])


def encode_any_size(clip_model, images):
    """CLIP image features [B, D] of `images` [B, 3, H, W] of any size (at least one grid cell)."""
    visual = clip_model.visual
    height, width = images.shape[-2:]
    if (height, width) == (visual.input_resolution, visual.input_resolution):
        return clip_model.encode_image(images)
    name, grid = _grid(visual, height, width)
    if min(grid) < 1:
        raise ValueError(f"A {height}x{width} image is too small for CLIP's image tower (one grid cell at least)")
    embedding = visual.get_parameter(name)
    return torch.func.functional_call(visual, {name: resample_positions(embedding, grid)},
                                      (images.to(clip_model.dtype),))
