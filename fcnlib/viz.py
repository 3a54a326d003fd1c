"""Pictures: colourised masks, overlays on images and legends, the fusion diagram, and the
training curves; each sized to be read across the book's column."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from fcnlib.classes import ClassTable

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    from fcnlib.models import FusionStep
    from fcnlib.receptive import Geometry
    from fcnlib.train import History

#: The width in pixels of the rendered book's column in a 1400-pixel browser window: a figure
#: wider than that is scaled down to it.
BOOK_COLUMN_PX = 748


def smallest_text_px(fig: Figure) -> float:
    """The height in pixels of the smallest text in ``fig`` (titles, labels, legends, ticks)
    when the figure is drawn across the book's column (scaled down to ``BOOK_COLUMN_PX``)."""
    scale = min(1.0, BOOK_COLUMN_PX / (fig.get_figwidth() * fig.dpi))
    texts = [text for text in fig.findobj(lambda a: hasattr(a, "get_fontsize")) if text.get_text()]
    return min(text.get_fontsize() for text in texts) * fig.dpi / 72 * scale


def _to_numpy(array: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    return np.asarray(array)


def colourise(mask: np.ndarray | torch.Tensor, table: ClassTable) -> np.ndarray:
    """Colour a label map: (H, W) integer labels to (H, W, 3) uint8 RGB in the dataset's colours."""
    labels = _to_numpy(mask)
    if labels.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {labels.shape}")
    if labels.min(initial=0) < 0 or labels.max(initial=0) > 255:
        raise ValueError("mask values must lie in 0..255 to be colourised")
    return table.palette()[labels.astype(np.intp)]


def unit_extent(geometry: Geometry, rows: int, cols: int) -> tuple[float, ...]:
    """Where a (rows, cols) map of units with receptive-field ``geometry`` lies over its input,
    as matplotlib's ``imshow(..., extent=)`` takes it: (left, right, bottom, top) in input
    pixels. Each unit is drawn as the S x S cell around its field's centre, -P + uS + (r-1)/2."""
    (first_row, first_col), stride = (
        (float(-axis.P + (axis.r - 1) / 2) for axis in (geometry.h, geometry.w)),
        float(geometry.h.S),
    )
    return (
        first_col - stride / 2,
        first_col + (cols - 0.5) * stride,
        first_row + (rows - 0.5) * stride,
        first_row - stride / 2,
    )


def image_to_hwc(image: np.ndarray | torch.Tensor) -> np.ndarray:
    """An image as (H, W, 3) uint8, from (3, H, W) uint8 tensors or (H, W, 3) arrays."""
    pixels = _to_numpy(image)
    if pixels.ndim == 3 and pixels.shape[0] == 3 and pixels.shape[-1] != 3:
        pixels = pixels.transpose(1, 2, 0)
    if pixels.ndim != 3 or pixels.shape[-1] != 3:
        raise ValueError(f"image must be (3, H, W) or (H, W, 3), got shape {pixels.shape}")
    if pixels.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {pixels.dtype}")
    return pixels


def overlay(
    image: np.ndarray | torch.Tensor,
    mask: np.ndarray | torch.Tensor,
    table: ClassTable,
    alpha: float = 0.5,
) -> np.ndarray:
    """Blend the colourised mask over the image, (H, W, 3) uint8; ignored pixels show the image."""
    pixels = image_to_hwc(image).astype(np.float32)
    labels = _to_numpy(mask)
    if labels.shape != pixels.shape[:2]:
        raise ValueError(f"image is {pixels.shape[:2]} but mask is {labels.shape}: sizes differ")
    colours = colourise(labels, table).astype(np.float32)
    weight = np.where(labels == table.ignore_index, 0.0, alpha)[..., None]
    return np.rint((1 - weight) * pixels + weight * colours).astype(np.uint8)


def legend_handles(table: ClassTable) -> list[Patch]:
    """Matplotlib patches naming each class in its colour, for ``ax.legend(handles=...)``."""
    from matplotlib.patches import Patch  # matplotlib only for pictures, not for training

    return [
        Patch(color=np.array(colour) / 255, label=name)
        for name, colour in zip(table.classes, table.colours, strict=True)
    ]


def label_panels(
    panels: list[np.ndarray | torch.Tensor],
    titles: list[str],
    table: ClassTable,
    columns: int | None = None,
    width: float = 10.0,
):
    """A figure of uint8 pictures side by side (each (H, W, 3) or (3, H, W)), titled,
    with the classes' legend below them: ``columns`` pictures a row (default: all in one),
    ``width`` inches wide. Sized so that, drawn across the book's column, the titles and the
    legend render at about 10 pixels or more. Returns the figure."""
    import matplotlib.pyplot as plt  # matplotlib only for pictures, not for training

    columns = columns or len(panels)
    rows = -(-len(panels) // columns)
    height = rows * width / columns * 0.78 + 0.9  # the frames' 3:4 shape, titles, legend
    fig, axes = plt.subplots(
        rows, columns, figsize=(width, height), layout="constrained", squeeze=False
    )
    for ax in axes.flat:
        ax.axis("off")
    for ax, picture, title in zip(axes.flat, panels, titles, strict=False):
        ax.imshow(image_to_hwc(picture))
        ax.set_title(title)
    fig.legend(handles=legend_handles(table), loc="outside lower center", ncols=6, frameon=False)
    return fig


def plot_history(history: History, axes=None) -> None:
    """Draw the training loss (per labelled pixel) and the validation mean IU against the step.

    ``axes``: two matplotlib axes (default: a new figure with two panels).
    """
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(10, 3.2), layout="constrained")
    loss_ax, iu_ax = axes
    loss_ax.clear(), iu_ax.clear()
    loss_ax.plot(history.steps, history.loss, lw=1)
    loss_ax.set(xlabel="step", ylabel="training loss per pixel")
    iu_ax.plot(history.eval_steps, [100 * e["mean_iu"] for e in history.evals], "o-")
    iu_ax.set(xlabel="step", ylabel="validation mean IU (%)")


class LiveCurves:
    """A ``fit`` callback that redraws :func:`plot_history` in a notebook as the run goes on."""

    def __init__(self) -> None:
        import matplotlib.pyplot as plt
        from IPython.display import display

        self.figure, self.axes = plt.subplots(1, 2, figsize=(10, 3.2), layout="constrained")
        plt.close(self.figure)  # shown through the display handle only, not again at the end
        self.handle = display(self.figure, display_id=True)

    def __call__(self, history: History) -> None:
        plot_history(history, self.axes)
        self.handle.update(self.figure)


#: Box colours of the fusion diagram, by the kind of step.
FUSION_COLOURS = {
    "input": "#dddddd",
    "tap": "#c6dbef",
    "score": "#fdd0a2",
    "scale": "#fdae6b",
    "upsample": "#c7e9c0",
    "crop": "#dadaeb",
    "sum": "#fcbba1",
}


def fusion_layout(steps: list[FusionStep]) -> dict[str, tuple[int, int]]:
    """(column, row) of every step of a fusion trace, in the spirit of the paper's Figure 3.

    Row 0 is the backbone: the input, then each tapped map, coarsest last. The coarsest map's
    column runs down through the main path (score, upsample, sum, ..., the final crop), one row
    a step; each skip runs down the column of the map it scores and reaches its sum from the
    side, in the sum's row. So every edge is horizontal or vertical.
    """
    by_name = {step.name: step for step in steps}
    backbone = [step.name for step in steps if step.kind in ("input", "tap")]
    column = {name: x for x, name in enumerate(backbone)}
    where = {name: (x, 0) for name, x in column.items()}
    main, name = [], steps[-1].name
    while by_name[name].kind not in ("input", "tap"):
        main.append(name)
        name = by_name[name].inputs[0]
    for row, name in enumerate(reversed(main), start=1):
        where[name] = (column[backbone[-1]], row)
        step = by_name[name]
        if step.kind != "sum":
            continue
        branch, skip = [], step.inputs[1]
        while by_name[skip].kind != "tap":
            branch.append(skip)
            skip = by_name[skip].inputs[0]
        for up, name_in_branch in enumerate(branch):
            where[name_in_branch] = (column[skip], row - up)
    return where


def fusion_diagram(steps: list[FusionStep]) -> Figure:
    """The steps of :meth:`fcnlib.models.FCN.fusion_trace` as boxes (name, channels x height x
    width, stride, and what the step does) joined by arrows, laid out by :func:`fusion_layout`;
    the backbone's arrows are dashed. Its text renders at 10 pixels or more across the book's
    column. Returns the figure."""
    import matplotlib.pyplot as plt  # matplotlib only for pictures, not for training
    from matplotlib.patches import FancyBboxPatch

    where = fusion_layout(steps)
    columns = 1 + max(x for x, _ in where.values())
    rows = 1 + max(y for _, y in where.values())
    pitch_x, pitch_y, box_w, box_h = 2.05, 0.9, 1.8, 0.7  # inches
    fig, ax = plt.subplots(figsize=(columns * pitch_x, rows * pitch_y), layout="constrained")
    ax.set(xlim=(0, columns * pitch_x), ylim=(-rows * pitch_y, 0))
    ax.axis("off")

    def centre(name: str) -> tuple[float, float]:
        x, y = where[name]
        return (x + 0.5) * pitch_x, -(y + 0.5) * pitch_y

    for step in steps:
        cx, cy = centre(step.name)
        box = (cx - box_w / 2, cy - box_h / 2)
        ax.add_patch(
            FancyBboxPatch(
                box, box_w, box_h, boxstyle="round,pad=0.02", fc=FUSION_COLOURS[step.kind]
            )
        )
        size = "x".join(str(n) for n in step.shape)
        lines = [step.name, f"{size}, stride {step.stride}"]
        if step.note:
            lines.append(step.note)
        ax.text(cx, cy, "\n".join(lines), ha="center", va="center", fontsize=9)
        for source in step.inputs:
            sx, sy = centre(source)
            if sy == cy:  # from the side
                start, end = (sx + box_w / 2, sy), (cx - box_w / 2, cy)
            else:  # from above
                start, end = (sx, sy - box_h / 2), (cx, cy + box_h / 2)
            style = "--" if step.kind == "tap" else "-"
            arrow = dict(arrowstyle="-|>", color="0.3", shrinkA=0, shrinkB=0, ls=style)
            ax.annotate("", xy=end, xytext=start, arrowprops=arrow)
    return fig
