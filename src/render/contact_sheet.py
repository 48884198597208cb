"""Pictures of a run and of a sweep: loss.png, progress.gif and the sweep's contact sheet.

Nothing here touches torch or Lightning: inputs are plain numbers, paths and PIL images,
so the same drawing code serves a live run, a finished run folder and a whole sweep.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from PIL import Image, ImageDraw, ImageFont

from src.render.text import fit_size, font, line_height, scale_image, text_width, wrap

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

    status: str  # "completed", "failed", "no result" or "not run"
    image: Image.Image | None = None  # the final image of a completed job
    caption: list[str] = field(default_factory=list)
    error: str = ""


@dataclass
class SheetLayout:
    """Where everything goes; computed before drawing so that tests can check the geometry."""

    rows: int
    cols: int
    box: tuple[int, int]  # image area of one cell (width, height)
    origin: tuple[int, int]  # top-left of cell (0, 0)
    cell: tuple[int, int]  # one cell incl. its caption (width, height)
    size: tuple[int, int]  # the whole sheet
    title_lines: list[str]
    title_fonts: list[ImageFont.FreeTypeFont]
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


def sheet_fonts(scale: float) -> tuple[ImageFont.FreeTypeFont, ImageFont.FreeTypeFont, ImageFont.FreeTypeFont]:
    """(label, title, caption) fonts."""
    return (
        font(round(LABEL_FONT * scale), bold=True),
        font(round(TITLE_FONT * scale), bold=True),
        font(round(CAPTION_FONT * scale)),
    )


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
        row_labels = [
            [piece for line in labels for piece in wrap(line, label_font, row_label_width)] for labels in rows
        ]
    else:
        row_labels = [[] for _ in rows]
    grid_width = len(cols) * cell[0] + (len(cols) - 1) * GAP
    x0 = PAD + (row_label_width + GAP if row_label_width else 0)
    title_lines: list[str] = []
    title_fonts: list[ImageFont.FreeTypeFont] = []
    room = max(x0 + grid_width - PAD, 360)
    for number, paragraph in enumerate(title.splitlines() if title else []):
        typeface = title_font if number == 0 else font(round(SUBTITLE_FONT * scale))
        lines = wrap(paragraph, typeface, room, max_lines=3)
        title_lines += lines
        title_fonts += [typeface] * len(lines)
    title_height = sum(line_height(f) for f in title_fonts) + (GAP if title_lines else 0)
    y0 = PAD + title_height + (col_label_height + 4 if col_label_height else 0)
    grid_height = len(rows) * cell[1] + (len(rows) - 1) * GAP
    width = max(
        x0 + grid_width + PAD,
        max((text_width(line, f) for line, f in zip(title_lines, title_fonts)), default=0) + 2 * PAD,
    )
    return SheetLayout(
        rows=len(rows),
        cols=len(cols),
        box=box,
        origin=(x0, y0),
        cell=cell,
        size=(width, y0 + grid_height + PAD),
        title_lines=title_lines,
        title_fonts=title_fonts,
        col_labels=col_labels,
        row_labels=row_labels,
        row_label_width=row_label_width,
    )


def draw_contact_sheet(
    axes: Sequence[tuple[str, Sequence[str]]], cells: Mapping[tuple[int, int], Cell], title: str = ""
) -> tuple[Image.Image, SheetLayout]:
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


def draw_cell(
    sheet: Image.Image,
    draw: ImageDraw.ImageDraw,
    layout: SheetLayout,
    row: int,
    col: int,
    cell: Cell,
    caption_font: ImageFont.FreeTypeFont,
) -> None:
    left, top, right, bottom = layout.image_box(row, col)
    if cell.status == "completed" and cell.image is not None:
        size = fit_size(cell.image.size, layout.box)
        sheet.paste(
            scale_image(cell.image.convert("RGB"), size),
            (left + (layout.box[0] - size[0]) // 2, top + (layout.box[1] - size[1]) // 2),
        )
        colour = MUTED
    else:
        failed = cell.status == "failed"
        fill, ink = (FAILED_FILL, FAILED_INK) if failed else (MISSING_FILL, MUTED)
        draw.rectangle((left, top, right - 1, bottom - 1), fill=fill, outline=ink, width=3)
        banner_font = font(max(14, min(36, layout.box[0] // 7)), bold=True)
        banner = cell.status.upper()
        y = top + max(8, layout.box[1] // 6)
        draw.text(
            (left + (layout.box[0] - text_width(banner, banner_font)) // 2, y), banner, fill=ink, font=banner_font
        )
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
