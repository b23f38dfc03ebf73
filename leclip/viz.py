"""Figures of `train.py --viz`: what a trainer computed, drawn as PNGs (and one text file).

The trainers compute what is drawn (CCD's CAMs, boxes and crops, CSA's contexts and
attention weights) with their own code; these helpers only draw it. Each figure is a
matplotlib `Figure` drawn with the Agg renderer (no display, no pyplot state), saved
atomically (`leclip.files`), at a fixed size: PANEL_INCHES x DPI pixels per panel (ours),
no tight cropping, so a figure's pixel size follows from its number of panels.
Images are [H, W, 3] arrays in [0, 1] (`to_rgb` turns a normalised view into one).
"""
import math
import os
import os.path as osp
from dataclasses import dataclass

import numpy as np

from .files import write_atomic, write_text_atomic

PANEL_INCHES = 3.0  # (ours) the side of one image panel
DPI = 100  # (ours) PANEL_INCHES x DPI = 300 px per panel
HEAT_ALPHA = 0.5  # (ours) opacity of a heat map over its image


def to_rgb(image, mean, std):
    """A normalised image tensor [3, H, W] -> [H, W, 3] numpy array in [0, 1]."""
    image = image.detach().float().cpu()
    mean = image.new_tensor(mean)[:, None, None]
    std = image.new_tensor(std)[:, None, None]
    return (image * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()


def _figure(width, height):
    from matplotlib.figure import Figure  # lazily: importing leclip stays light

    return Figure(figsize=(width, height), dpi=DPI)


def _panels(fig, rows, columns, title=""):
    """rows x columns image axes, with room above each for a two-line title and above
    all for the figure's `title` (fixed margins: a layout engine doubles the drawing time)."""
    height = fig.get_figheight()
    axes = fig.subplots(rows, columns, squeeze=False, gridspec_kw=dict(
        left=0.02, right=0.98, bottom=0.02, top=1 - 0.75 / height, wspace=0.1, hspace=0.3))
    fig.suptitle(title, fontsize=10, y=1 - 0.05 / height, va="top")
    return axes


def _save(fig, path):
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    # (ours) zlib level 1: about twice as fast as the default 6, files up to 1.3 x larger
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI, pil_kwargs={"compress_level": 1}))
    return path


def _image_axis(ax, image, title="", color="black"):
    ax.imshow(image, interpolation="nearest")
    ax.set_title(title, fontsize=9, color=color)
    ax.set_xticks([])
    ax.set_yticks([])


@dataclass
class CamRow:
    """One class of one image: its CAM over the image, its box and the crop cut from it."""

    name: str  # class name
    score: float  # the classifier's sigmoid score
    heat: np.ndarray  # [H, W] in [0, 1], at the image's size
    box: tuple  # (x1, y1, x2, y2) pixel edges in the image
    crop: np.ndarray  # [h, w, 3] in [0, 1]
    crop_note: str  # what CLIP says of the crop


def cam_box_crop(path, image, rows, title="", per_line=4):
    """PNG of one image: per `CamRow` two panels, the image with the CAM overlaid and the
    box drawn, then the crop; `per_line` rows side by side (ours), as many lines as
    needed. An image without rows is drawn alone (two panels, the second empty)."""
    from matplotlib.patches import Rectangle

    columns = min(max(len(rows), 1), per_line)
    lines = max(math.ceil(len(rows) / per_line), 1)
    fig = _figure(2 * columns * PANEL_INCHES, lines * PANEL_INCHES)
    axes = _panels(fig, lines, 2 * columns, title).reshape(-1, 2)
    if not rows:
        _image_axis(axes[0, 0], image, "no class selected")
    for (left, right), row in zip(axes, rows):
        _image_axis(left, image, f"{row.name}\nscore {row.score:.2f}")
        left.imshow(row.heat, cmap="jet", alpha=HEAT_ALPHA, vmin=0, vmax=1, interpolation="bilinear")
        x1, y1, x2, y2 = row.box
        # imshow puts pixel centres on integers: pixel edges are at -0.5
        left.add_patch(Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, edgecolor="white", linewidth=2))
        _image_axis(right, row.crop, row.crop_note)
    for ax in axes.flatten()[2 * len(rows) if rows else 1:]:
        ax.axis("off")
    return _save(fig, path)


def ccd_cam_figures(folder, images, normalisation, classnames, scores, boxes, maps, crops, crop_probs, image_index,
                    class_index, hidden=None):
    """CCD's label update drawn: one `cam_box_crop` PNG per image (ccd_cam_image<i>.png),
    one row per (image, class) pair it selected, highest score first.

    images [n, 3, H, W]: the CLIP view the crops are cut from, normalised by
    `normalisation` = (mean, std); scores [N, C], boxes [N, C, 4] of the class-selection
    pass (N >= n); maps [n, C, H, W] the CAMs the boxes come from; crops [K, ...] (or a
    list) and crop_probs [K, C] (CLIP's softmax) of the K selected pairs (image_index,
    class_index); hidden [n, C]: the true labels, named in the titles when given."""
    mean, std = normalisation
    for i in range(len(images)):
        rows = []
        for k in (image_index == i).nonzero().flatten().tolist():
            c, top = int(class_index[k]), int(crop_probs[k].argmax())
            rows.append(CamRow(
                name=classnames[c], score=float(scores[i, c]), heat=maps[i, c].numpy(), box=tuple(boxes[i, c].tolist()),
                crop=to_rgb(crops[k], mean, std),
                crop_note=f"crop: CLIP {classnames[c]} {float(crop_probs[k, c]):.2f}\n"
                          f"top {classnames[top]} {float(crop_probs[k, top]):.2f}",
            ))
        rows.sort(key=lambda row: -row.score)
        title = f"training image {i}"
        if hidden is not None:
            true = [classnames[c] for c in hidden[i].nonzero().flatten().tolist()]
            title += f" (hidden labels: {', '.join(true) or 'none'})"
        cam_box_crop(osp.join(folder, f"ccd_cam_image{i}.png"), to_rgb(images[i], mean, std), rows, title=title)
    print(f"--viz: CCD's CAM, box and crop of {len(images)} training images in {folder}")


def matrix_heatmap(path, matrix, names, title="", groups=None):
    """PNG of a square matrix [C, C] with the class names as ticks; `groups` [C] (e.g.
    each class's context) orders the classes by group and draws lines between groups.
    One panel per 12 classes a side, at least one (ours)."""
    matrix = np.asarray(matrix)
    order = np.arange(len(names)) if groups is None else np.argsort(np.asarray(groups), kind="stable")
    side = PANEL_INCHES * max(1.0, len(names) / 12)
    fig = _figure(side + 1.5, side + 1)  # room for the colour bar and the tick labels
    ax = fig.add_axes([0.25, 0.22, 0.6, 0.68])
    shown = ax.imshow(matrix[np.ix_(order, order)], cmap="viridis", interpolation="nearest")
    ticks = np.arange(len(names))
    labels = [names[k] for k in order]
    ax.set_xticks(ticks, labels, rotation=90, fontsize=7)
    ax.set_yticks(ticks, labels, fontsize=7)
    if groups is not None:
        sorted_groups = np.asarray(groups)[order]
        for edge in np.flatnonzero(np.diff(sorted_groups)) + 0.5:
            ax.axhline(edge, color="white", linewidth=1)
            ax.axvline(edge, color="white", linewidth=1)
    fig.colorbar(shown, cax=fig.add_axes([0.88, 0.22, 0.03, 0.68]))
    ax.set_title(title, fontsize=9)
    return _save(fig, path)


def attention_grid(path, image, maps, titles, highlighted=(), title=""):
    """PNG of one image and, per class, its attention map [g, g] over the image's g x g
    patches (`maps` [C, g, g]), titled `titles[k]`; the classes in `highlighted` (e.g.
    the true labels) get green titles. ceil(sqrt(C + 1)) panels a side, 2/3 of a panel each."""
    count = len(maps) + 1
    columns = math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    inches = 2 * PANEL_INCHES / 3
    fig = _figure(columns * inches, rows * inches)
    axes = _panels(fig, rows, columns, title).flatten()
    _image_axis(axes[0], image, "image")
    height, width = image.shape[:2]
    for k, (ax, attention) in enumerate(zip(axes[1:], maps)):
        _image_axis(ax, image, titles[k], "green" if k in highlighted else "black")
        # each patch's weight over the pixels it covers
        ax.imshow(attention, cmap="jet", alpha=HEAT_ALPHA, extent=(-0.5, width - 0.5, height - 0.5, -0.5),
                  interpolation="nearest")
    for ax in axes[count:]:
        ax.axis("off")
    return _save(fig, path)


def write_groups(path, groups):
    """Text file: one line "heading: name, name, ..." per (heading, names) of `groups`."""
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    write_text_atomic(path, "".join(f"{heading}: {', '.join(names)}\n" for heading, names in groups))
    return path
