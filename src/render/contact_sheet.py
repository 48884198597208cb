"""Pictures of a run and of a sweep: loss.png, progress.gif and the sweep's contact sheet.

Nothing here touches torch or Lightning: inputs are plain numbers, paths and PIL images,
so the same drawing code serves a live run, a finished run folder and a whole sweep.
"""

from __future__ import annotations

import math
import os
import textwrap
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from PIL import Image, ImageDraw, ImageFont

# -- fonts ---------------------------------------------------------------------------------


@lru_cache(maxsize=None)
def font(size: int, bold: bool = False) -> ImageFont.ImageFont:
    """DejaVu Sans (shipped with matplotlib) at `size` px; Pillow's own font as a fallback."""
    try:
        from matplotlib import font_manager

        path = font_manager.findfont(font_manager.FontProperties(family="DejaVu Sans", weight="bold" if bold else "normal"))
        return ImageFont.truetype(path, size)
    except Exception:  # pragma: no cover - matplotlib is a dependency; stay drawable without it
        return ImageFont.load_default(size)


def text_width(text: str, typeface: ImageFont.ImageFont) -> int:
    return int(math.ceil(typeface.getlength(text))) if text else 0


def line_height(typeface: ImageFont.ImageFont) -> int:
    ascent, descent = typeface.getmetrics()
    return ascent + descent + 2


def wrap(text: str, typeface: ImageFont.ImageFont, width: int, max_lines: int | None = None) -> list[str]:
    """Break `text` into lines no wider than `width` px (long words are cut); '…' marks a cut tail."""
    lines: list[str] = []
    for paragraph in str(text).splitlines() or [""]:
        words = paragraph.split(" ")
        line = ""
        for word in words:
            candidate = f"{line} {word}" if line else word
            if text_width(candidate, typeface) <= width:
                line = candidate
                continue
            if line:
                lines.append(line)
            while text_width(word, typeface) > width and len(word) > 1:
                cut = len(word)
                while cut > 1 and text_width(word[:cut], typeface) > width:
                    cut -= 1
                lines.append(word[:cut])
                word = word[cut:]
            line = word
        lines.append(line)
    if max_lines is not None and len(lines) > max_lines:
        lines = lines[:max_lines]
        last = lines[-1]
        while last and text_width(last + "…", typeface) > width:
            last = last[:-1]
        lines[-1] = last + "…"
    return lines


def fit_size(size: tuple[int, int], box: tuple[int, int]) -> tuple[int, int]:
    """(width, height) of an image of `size` scaled to fit inside `box`, aspect kept."""
    scale = min(box[0] / size[0], box[1] / size[1])
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def scale_image(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Resize; enlargements use nearest neighbour so that tiny runs show their real pixels."""
    if image.size == size:
        return image
    enlarging = size[0] >= image.size[0] and size[1] >= image.size[1]
    return image.resize(size, Image.Resampling.NEAREST if enlarging else Image.Resampling.LANCZOS)


# -- loss.png ------------------------------------------------------------------------------

MAIN_TERMS = ("loss/total", "loss/content", "loss/style", "loss/tv")
MAIN_COLOURS = {"loss/total": "black", "loss/content": "tab:blue", "loss/style": "tab:red", "loss/tv": "tab:green"}


def plot_losses(history: Mapping[str, Sequence[tuple[int, float]]], path: str | os.PathLike, title: str = "") -> Path:
    """Every loss component against step on a log scale: the main terms bold, each style layer thin.

    Zero or non-finite values cannot be drawn on a log axis; a term that is zero throughout is
    named in the legend as "= 0" instead of being silently left out.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from matplotlib import colormaps
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(9.5, 5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    layer_keys = sorted(k for k in history if k.startswith("loss/style/"))
    other_keys = [k for k in history if k not in MAIN_TERMS and k not in layer_keys]
    # style layers shallow -> deep in one colour ramp, distinct from the main terms' colours
    ramp = colormaps["viridis"]
    layer_colours = {key: ramp(0.1 + 0.8 * i / max(1, len(layer_keys) - 1)) for i, key in enumerate(layer_keys)}
    markers = max((len(points) for points in history.values()), default=0) <= 30  # the same on every line
    drawn = 0
    for key in [*MAIN_TERMS, *other_keys, *layer_keys]:
        points = history.get(key)
        if not points:
            continue
        points = sorted(points)
        steps = [s for s, v in points if math.isfinite(v) and v > 0]
        values = [v for s, v in points if math.isfinite(v) and v > 0]
        label = key.removeprefix("loss/")
        if not values:
            axes.plot([], [], linestyle="none", label=f"{label} = 0")
            continue
        if key in MAIN_TERMS:
            style = dict(color=MAIN_COLOURS[key], linewidth=2.2 if key == "loss/total" else 1.6)
        else:
            style = dict(linewidth=1.0, linestyle="--", alpha=0.9, color=layer_colours.get(key))
        marker = "o" if markers else None
        axes.plot(steps, values, label=label, marker=marker, markersize=3, **style)
        drawn += 1
    if drawn:
        axes.set_yscale("log")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("step (optimiser updates applied)")
    axes.set_ylabel("weighted loss (log scale)")
    axes.grid(True, which="major", alpha=0.4)
    axes.grid(True, which="minor", alpha=0.12)
    if title:
        axes.set_title("\n".join(textwrap.wrap(title, 90)), fontsize=10)
    if history:
        axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), framealpha=0.9)
    figure.tight_layout()
    path = Path(path)
    temporary = path.with_name(path.name + ".tmp")
    figure.savefig(temporary, format="png")
    os.replace(temporary, path)
    return path


# -- progress.gif --------------------------------------------------------------------------

GIF_MIN_SIDE = 256  # tiny test runs are enlarged (pixel-exact) so that the animation is visible
GIF_MAX_SIDE = 768
GIF_MAX_FRAMES = 120


def write_progress_gif(frames: Sequence[tuple[int, Image.Image | str | os.PathLike]], path: str | os.PathLike,
                       total_steps: int | None = None) -> Path:
    """Animate (step, image) frames, first to last, each captioned with its step; the last is held.

    Images may be PIL images or paths. Long runs are thinned to at most GIF_MAX_FRAMES frames,
    always keeping the first and the last.
    """
    frames = sorted(frames, key=lambda frame: frame[0])
    if not frames:
        raise ValueError("no frames to animate")
    if len(frames) > GIF_MAX_FRAMES:
        stride = (len(frames) - 1) / (GIF_MAX_FRAMES - 1)
        frames = [frames[round(i * stride)] for i in range(GIF_MAX_FRAMES)]
    total = total_steps if total_steps is not None else frames[-1][0]
    pictures = []
    for step, source in frames:
        image = source if isinstance(source, Image.Image) else Image.open(source)
        image.load()
        pictures.append((step, image.convert("RGB")))
    width, height = pictures[-1][1].size
    long_side = max(width, height)
    scale = 1.0
    if long_side < GIF_MIN_SIDE:
        scale = math.ceil(GIF_MIN_SIDE / long_side)
    elif long_side > GIF_MAX_SIDE:
        scale = GIF_MAX_SIDE / long_side
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    caption_font = font(max(11, min(18, size[0] // 20)))
    bar = line_height(caption_font) + 6
    rendered = []
    for step, image in pictures:
        canvas = Image.new("RGB", (size[0], size[1] + bar), (255, 255, 255))
        canvas.paste(scale_image(image, size), (0, 0))
        draw = ImageDraw.Draw(canvas)
        label = "initial image" if step == 0 else f"step {step}" + (f" / {total}" if total else "")
        draw.text((6, size[1] + 3), label, fill=(0, 0, 0), font=caption_font)
        if total:
            draw.rectangle((0, size[1], round(size[0] * min(1.0, step / total)), size[1] + 2), fill=(200, 40, 40))
        rendered.append(canvas)
    per_frame = int(min(400, max(60, 5000 / max(1, len(rendered)))))
    durations = [per_frame] * len(rendered)
    durations[-1] = 2000
    if len(durations) > 1:
        durations[0] = max(per_frame, 600)
    path = Path(path)
    temporary = path.with_name(path.name + ".tmp")
    rendered[0].save(temporary, format="GIF", save_all=True, append_images=rendered[1:], duration=durations,
                     loop=0, optimize=False, disposal=1)
    os.replace(temporary, path)
    return path


# -- contact sheet -------------------------------------------------------------------------

BACKGROUND = (255, 255, 255)
INK = (20, 20, 20)
MUTED = (100, 100, 100)
FAILED_FILL = (253, 226, 226)
FAILED_INK = (190, 20, 20)
MISSING_FILL = (232, 232, 232)

PAD = 16
GAP = 10
CELL_MIN = 192
CELL_MAX = 512
CELL_SMALLEST = 96
SHEET_MAX = 6000
TITLE_FONT = 20
SUBTITLE_FONT = 14
LABEL_FONT = 16
CAPTION_FONT = 13
CAPTION_LINES = 2
ROW_LABEL_MAX = 280


@dataclass
class Cell:
    """One job's place on the sheet."""

    status: str                       # "completed", "failed", "no result" or "not run"
    image: Image.Image | None = None  # the final image of a completed job
    caption: list[str] = field(default_factory=list)
    error: str = ""


@dataclass
class SheetLayout:
    """Where everything goes; computed before drawing so that tests can check the geometry."""

    rows: int
    cols: int
    box: tuple[int, int]                  # image area of one cell (width, height)
    origin: tuple[int, int]               # top-left of cell (0, 0)
    cell: tuple[int, int]                 # one cell incl. its caption (width, height)
    size: tuple[int, int]                 # the whole sheet
    title_lines: list[str]
    title_fonts: list[ImageFont.ImageFont]
    col_labels: list[list[str]]
    row_labels: list[list[str]]
    row_label_width: int

    def cell_origin(self, row: int, col: int) -> tuple[int, int]:
        return self.origin[0] + col * (self.cell[0] + GAP), self.origin[1] + row * (self.cell[1] + GAP)

    def image_box(self, row: int, col: int) -> tuple[int, int, int, int]:
        x, y = self.cell_origin(row, col)
        return x, y, x + self.box[0], y + self.box[1]


def text_scale(box: tuple[int, int]) -> float:
    """Text grows with the cells (up to 1.6x) so that it stays readable next to large images."""
    return min(1.6, max(1.0, box[0] / 256))


def sheet_fonts(scale: float) -> tuple[ImageFont.ImageFont, ImageFont.ImageFont, ImageFont.ImageFont]:
    """(label, title, caption) fonts."""
    return (font(round(LABEL_FONT * scale), bold=True), font(round(TITLE_FONT * scale), bold=True),
            font(round(CAPTION_FONT * scale)))


def grid_shape(axes: Sequence[tuple[str, Sequence[str]]]) -> tuple[list[list[str]], list[list[str]]]:
    """Row and column labels for swept `axes` [(key, values)]: the last parameter runs along the
    columns; the rows are every combination of the others (one label line per parameter)."""
    if not axes:
        return [[]], [[]]
    *outer, last = axes
    cols = [[f"{last[0]}={value}"] for value in last[1]]
    rows: list[list[str]] = [[]]
    for key, values in outer:
        rows = [labels + [f"{key}={value}"] for labels in rows for value in values]
    return rows, cols


def cell_box_size(images: Iterable[Image.Image | None], grid_side: int = 1) -> tuple[int, int]:
    """The image area of a cell: the largest final image, clamped to [CELL_MIN, CELL_MAX] px,
    and smaller in big grids (`grid_side`: the larger of rows and columns) to keep the sheet
    within about SHEET_MAX px."""
    sizes = [image.size for image in images if image is not None]
    limit = min(CELL_MAX, max(CELL_SMALLEST, SHEET_MAX // max(1, grid_side)))
    if not sizes:
        return min(CELL_MIN, limit), min(CELL_MIN, limit)
    long_side = max(max(size) for size in sizes)
    target = min(limit, max(CELL_MIN, long_side))
    fitted = [fit_size(size, (target, target)) for size in sizes]
    return max(w for w, _ in fitted), max(h for _, h in fitted)


def sheet_layout(axes: Sequence[tuple[str, Sequence[str]]], box: tuple[int, int], title: str = "") -> SheetLayout:
    rows, cols = grid_shape(axes)
    scale = text_scale(box)
    label_font, title_font, caption_font = sheet_fonts(scale)
    cell = (box[0], box[1] + CAPTION_LINES * line_height(caption_font) + 4)
    col_labels = [wrap("  ".join(labels), label_font, cell[0], max_lines=2) for labels in cols]
    col_label_height = max((len(lines) for lines in col_labels), default=0) * line_height(label_font)
    row_label_width = 0
    row_labels = []
    if any(rows):
        widest = max(text_width(line, label_font) for labels in rows for line in labels)
        row_label_width = min(ROW_LABEL_MAX, widest)
        row_labels = [[piece for line in labels for piece in wrap(line, label_font, row_label_width)] for labels in rows]
    else:
        row_labels = [[] for _ in rows]
    grid_width = len(cols) * cell[0] + (len(cols) - 1) * GAP
    x0 = PAD + (row_label_width + GAP if row_label_width else 0)
    title_lines: list[str] = []
    title_fonts: list[ImageFont.ImageFont] = []
    room = max(x0 + grid_width - PAD, 360)
    for number, paragraph in enumerate(title.splitlines() if title else []):
        typeface = title_font if number == 0 else font(round(SUBTITLE_FONT * scale))
        lines = wrap(paragraph, typeface, room, max_lines=3)
        title_lines += lines
        title_fonts += [typeface] * len(lines)
    title_height = sum(line_height(f) for f in title_fonts) + (GAP if title_lines else 0)
    y0 = PAD + title_height + (col_label_height + 4 if col_label_height else 0)
    grid_height = len(rows) * cell[1] + (len(rows) - 1) * GAP
    width = max(x0 + grid_width + PAD, max((text_width(l, f) for l, f in zip(title_lines, title_fonts)), default=0) + 2 * PAD)
    return SheetLayout(
        rows=len(rows), cols=len(cols), box=box, origin=(x0, y0), cell=cell,
        size=(width, y0 + grid_height + PAD), title_lines=title_lines, title_fonts=title_fonts,
        col_labels=col_labels, row_labels=row_labels, row_label_width=row_label_width,
    )


def draw_contact_sheet(axes: Sequence[tuple[str, Sequence[str]]], cells: Mapping[tuple[int, int], Cell],
                       title: str = "") -> tuple[Image.Image, SheetLayout]:
    """Every job's final image in a grid laid out by the swept parameters.

    `cells` maps (row, col) -> Cell; grid positions without a cell are drawn as "not run".
    """
    rows, cols = grid_shape(axes)
    box = cell_box_size((cell.image for cell in cells.values()), max(len(rows), len(cols)))
    layout = sheet_layout(axes, box, title)
    sheet = Image.new("RGB", layout.size, BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    label_font, title_font, caption_font = sheet_fonts(text_scale(layout.box))
    y = PAD
    for line, typeface in zip(layout.title_lines, layout.title_fonts):
        draw.text((PAD, y), line, fill=INK, font=typeface)
        y += line_height(typeface)
    for col, lines in enumerate(layout.col_labels):
        x, top = layout.cell_origin(0, col)
        y = top - 4 - len(lines) * line_height(label_font)
        for line in lines:
            draw.text((x + (layout.box[0] - text_width(line, label_font)) // 2, y), line, fill=INK, font=label_font)
            y += line_height(label_font)
    for row, lines in enumerate(layout.row_labels):
        _, top = layout.cell_origin(row, 0)
        y = top + (layout.box[1] - len(lines) * line_height(label_font)) // 2
        for line in lines:
            draw.text((PAD + layout.row_label_width - text_width(line, label_font), y), line, fill=INK, font=label_font)
            y += line_height(label_font)
    for row in range(layout.rows):
        for col in range(layout.cols):
            draw_cell(sheet, draw, layout, row, col, cells.get((row, col)) or Cell(status="not run"), caption_font)
    return sheet, layout


def draw_cell(sheet: Image.Image, draw: ImageDraw.ImageDraw, layout: SheetLayout, row: int, col: int, cell: Cell,
              caption_font: ImageFont.ImageFont) -> None:
    left, top, right, bottom = layout.image_box(row, col)
    if cell.status == "completed" and cell.image is not None:
        size = fit_size(cell.image.size, layout.box)
        sheet.paste(scale_image(cell.image.convert("RGB"), size),
                    (left + (layout.box[0] - size[0]) // 2, top + (layout.box[1] - size[1]) // 2))
        colour = MUTED
    else:
        failed = cell.status == "failed"
        fill, ink = (FAILED_FILL, FAILED_INK) if failed else (MISSING_FILL, MUTED)
        draw.rectangle((left, top, right - 1, bottom - 1), fill=fill, outline=ink, width=3)
        banner_font = font(max(14, min(36, layout.box[0] // 7)), bold=True)
        banner = cell.status.upper()
        y = top + max(8, layout.box[1] // 6)
        draw.text((left + (layout.box[0] - text_width(banner, banner_font)) // 2, y), banner, fill=ink, font=banner_font)
        y += line_height(banner_font) + 6
        room = max(1, (bottom - 8 - y) // line_height(caption_font))
        for line in wrap(cell.error, caption_font, layout.box[0] - 16, max_lines=room) if cell.error else []:
            draw.text((left + 8, y), line, fill=ink, font=caption_font)
            y += line_height(caption_font)
        colour = ink
    y = bottom + 2
    for line in cell.caption[:CAPTION_LINES]:
        fitted = wrap(line, caption_font, layout.box[0], max_lines=1)[0]
        draw.text((left, y), fitted, fill=colour, font=caption_font)
        y += line_height(caption_font)


def short_number(value: float | None) -> str:
    """3 significant digits, scientific when large or small: 123456.7 -> 1.23e+05."""
    if value is None or not isinstance(value, (int, float)):
        return "?"
    if value == 0 or (1e-2 <= abs(value) < 1e4):
        return f"{value:.3g}"
    return f"{value:.2e}"


