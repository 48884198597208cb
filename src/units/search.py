"""Streaming search for the image patches that excite each unit most (Zeiler & Fergus 2013).

Images are read from disk a batch at a time, scanned at one or more scales, and pushed
through the backbone. For every unit of every requested layer only a running top-k
(activation, image, scale, position) is kept, plus the running sum of its activations,
so memory does not grow with the number of images.

A "unit" is one channel of a layer at one position; its patch is that position's
receptive field. Per image (all its scales together) a unit contributes at most
`per_image` patches, and two patches of the same image must be at least
`spacing * receptive-field size` apart (centre to centre, along x or along y).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from torch.utils.data import DataLoader, Dataset

from src.backbone.receptive_field import ReceptiveField, backbone_receptive_fields
from src.backbone.vgg import VGG19Features, check_layer_names
from src.common.errors import UserError
from src.common.images import (
    MIN_SIZE,
    load_image,
    resize,
    size_for_long_side,
    to_tensor,
)
from src.common.paths import path_problem

# Views pushed through the network at once are capped by pixels too, to bound memory.
MAX_BATCH_PIXELS = 1 << 20
log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


# -- the images ---------------------------------------------------------------------------


def find_images(folder: str | os.PathLike) -> list[Path]:
    """Image files under `folder` (searched recursively, hidden entries skipped), sorted."""
    folder = Path(folder)
    problem = path_problem(folder)
    if problem is not None:
        raise UserError(f"data.dir: image folder {problem}: {folder}")
    if not folder.is_dir():
        raise UserError(f"data.dir must be a folder of images, got a file: {folder}")
    files = []
    for root, dirs, names in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files += [Path(root) / n for n in names if not n.startswith(".") and Path(n).suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise UserError(f"no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) found in {folder}")
    return sorted(files)


def scaled_size(width: int, height: int, long_side: int) -> tuple[int, int]:
    """(width, height) of an image scanned at `long_side` px."""
    return size_for_long_side(width, height, long_side)


class ScaledImages(Dataset):
    """Each item: one image file, resized so that its long side is each of `scales` in turn.

    Unreadable files do not stop a long run: their item carries an `error` instead.
    """

    def __init__(self, files: Sequence[Path], root: Path, scales: Sequence[int]) -> None:
        self.files = list(files)
        self.root = root
        self.scales = [int(s) for s in scales]

    def __len__(self) -> int:
        return len(self.files)

    def name(self, index: int) -> str:
        path = self.files[index]
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

    def __getitem__(self, index: int) -> dict:
        item: dict = {"index": index, "name": self.name(index)}
        try:
            image = load_image(self.files[index], role="data")
        except UserError as error:
            item["error"] = str(error)
            return item
        item["size"] = image.size
        item["views"] = [to_tensor(resize(image, scaled_size(*image.size, s)))[0] for s in self.scales]
        return item


def _keep_list(batch: list[dict]) -> list[dict]:
    return batch


# -- per-view and per-image candidates ------------------------------------------------------


def suppression_radius(rf: ReceptiveField, spacing: float) -> int:
    """Feature-map positions closer than this (Chebyshev, inclusive) to a pick are suppressed."""
    return max(0, math.ceil(spacing * rf.size / rf.stride) - 1)


def inside_fraction(rf: ReceptiveField, length: int, image_length: int) -> torch.Tensor:
    """For each of `length` positions along an axis: the fraction of its field inside the image."""
    spans = [rf.span(i) for i in range(length)]
    return torch.tensor([(min(b, image_length) - max(a, 0)) / rf.size for a, b in spans])


def allowed_positions(
    rf: ReceptiveField, shape: tuple[int, int], image_shape: tuple[int, int], min_inside: float
) -> torch.Tensor | None:
    """(H, W) bool: positions whose field lies at least `min_inside` inside the image (None: all)."""
    if min_inside <= 0:
        return None
    (h, w), (image_h, image_w) = shape, image_shape
    inside = inside_fraction(rf, h, image_h)[:, None] * inside_fraction(rf, w, image_w)[None, :]
    allowed = inside >= min_inside - 1e-9
    if not allowed.any():  # image smaller than the field: keep the most central positions
        allowed = inside >= inside.max() - 1e-9
    return allowed


def view_candidates(
    activations: torch.Tensor,
    picks: int,
    radius: int,
    allowed: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Up to `picks` well-separated maxima of every channel of every map.

    activations: (N, C, H, W); allowed: optional (H, W) mask of the positions that may be
    picked. Returns values, ys, xs, each (N, C, picks); a pick with nothing left to take
    has value -inf. Picks are in decreasing order; each later pick is more than `radius`
    positions away (along y or x) from every earlier one.
    """
    n, c, h, w = activations.shape
    flat = activations.reshape(n * c, h * w)
    if allowed is not None and not bool(allowed.all()):
        flat = flat.masked_fill(~allowed.to(flat.device).view(1, h * w), -math.inf)
    if picks == 1:
        values, index = flat.max(dim=1)
        return values.view(n, c, 1), (index // w).view(n, c, 1), (index % w).view(n, c, 1)
    work = flat.clone() if flat.data_ptr() == activations.data_ptr() else flat
    rows = torch.arange(h, device=flat.device)
    cols = torch.arange(w, device=flat.device)
    values, ys, xs = [], [], []  # type: ignore[assignment]  # a list here, a tensor above
    for _ in range(picks):
        value, index = work.max(dim=1)
        y, x = index // w, index % w
        values.append(value), ys.append(y), xs.append(x)  # type: ignore[attr-defined, func-returns-value]
        near_rows = (rows[None, :] - y[:, None]).abs() <= radius  # (NC, H)
        near_cols = (cols[None, :] - x[:, None]).abs() <= radius  # (NC, W)
        work.view(n * c, h, w).masked_fill_(near_rows[:, :, None] & near_cols[:, None, :], -math.inf)
    stack = lambda parts: torch.stack(parts, dim=1).view(n, c, picks)  # noqa: E731
    return stack(values), stack(ys), stack(xs)


@dataclass
class Candidates:
    """Candidate patches, one row per unit (channel): all tensors are (C, M)."""

    values: torch.Tensor
    scale: torch.Tensor
    y: torch.Tensor
    x: torch.Tensor

    @staticmethod
    def cat(parts: Sequence[Candidates]) -> Candidates:
        return Candidates(*(torch.cat([getattr(p, f) for p in parts], dim=1) for f in ("values", "scale", "y", "x")))


def merge_scales(
    views: Sequence[Candidates],
    rf: ReceptiveField,
    view_sizes: Sequence[tuple[int, int]],
    image_size: tuple[int, int],
    picks: int,
    spacing: float,
) -> Candidates:
    """One image's candidates from all its scales -> at most `picks` per unit, spaced apart.

    Distances are measured in the original image's pixels, against the larger of the
    two patches: so a feature found at two scales counts once.
    """
    if len(views) == 1:
        return views[0]
    both = Candidates.cat(views)
    width, height = image_size
    ratio = torch.tensor([[(width / w + height / h) / 2 for (w, h) in view_sizes]], device=both.values.device)
    ratio = ratio.expand(both.values.shape[0], -1).gather(1, both.scale)  # (C, M) px per scanned px
    center_y = (float(rf.start) + both.y * rf.stride + 0.5) * ratio - 0.5
    center_x = (float(rf.start) + both.x * rf.stride + 0.5) * ratio - 0.5
    size = rf.size * ratio
    work = both.values.clone()
    chosen, values = [], cast(Any, [])  # a list of (C, 1) tensors, then their concatenation
    for _ in range(picks):
        value, best = work.max(dim=1, keepdim=True)  # value is -inf once all are taken or suppressed
        chosen.append(best), values.append(value)  # type: ignore[func-returns-value]
        if spacing > 0:
            reach = spacing * torch.maximum(size, size.gather(1, best))
            near = ((center_y - center_y.gather(1, best)).abs() < reach) & (
                (center_x - center_x.gather(1, best)).abs() < reach
            )
            work.masked_fill_(near, -math.inf)
        work.scatter_(1, best, -math.inf)
    index = torch.cat(chosen, dim=1)
    values = torch.cat(values, dim=1)
    return Candidates(values, both.scale.gather(1, index), both.y.gather(1, index), both.x.gather(1, index))


# -- running top-k --------------------------------------------------------------------------


@dataclass
class LayerTopK:
    """The k best patches of every unit of one layer seen so far, and activation sums."""

    layer: str
    channels: int
    k: int
    rf: ReceptiveField
    device: torch.device | str = "cpu"
    values: torch.Tensor = field(init=False)
    image: torch.Tensor = field(init=False)
    scale: torch.Tensor = field(init=False)
    y: torch.Tensor = field(init=False)
    x: torch.Tensor = field(init=False)
    sums: torch.Tensor = field(init=False)
    gram: torch.Tensor = field(init=False)
    count: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        shape = (self.channels, self.k)
        self.values = torch.full(shape, -math.inf, device=self.device)
        self.image = torch.full(shape, -1, dtype=torch.long, device=self.device)
        self.scale = torch.zeros(shape, dtype=torch.long, device=self.device)
        self.y = torch.zeros(shape, dtype=torch.long, device=self.device)
        self.x = torch.zeros(shape, dtype=torch.long, device=self.device)
        self.sums = torch.zeros(self.channels, dtype=torch.float64, device=self.device)
        self.gram = torch.zeros(self.channels, self.channels, dtype=torch.float64, device=self.device)

    def add_sums(self, activations: torch.Tensor) -> None:
        """activations: (N, C, H, W), every position of N views: running sums and Gram matrix."""
        self.sums += activations.sum(dim=(0, 2, 3), dtype=torch.float64)
        for view in activations:
            flat = view.reshape(self.channels, -1)
            self.gram += (flat @ flat.T).double()
        self.count += activations.shape[0] * activations.shape[2] * activations.shape[3]

    def merge(self, candidates: Candidates, image: torch.Tensor) -> None:
        """Fold in new candidates; `image` (C, M) holds their image indices. Earlier entries win ties."""
        values = torch.cat([self.values, candidates.values], dim=1)
        order = torch.sort(values, dim=1, descending=True, stable=True).indices[:, : self.k]
        self.values = values.gather(1, order)
        self.image = torch.cat([self.image, image], dim=1).gather(1, order)
        self.scale = torch.cat([self.scale, candidates.scale], dim=1).gather(1, order)
        self.y = torch.cat([self.y, candidates.y], dim=1).gather(1, order)
        self.x = torch.cat([self.x, candidates.x], dim=1).gather(1, order)

    @property
    def mean(self) -> torch.Tensor:
        return self.sums / max(self.count, 1)

    @property
    def correlation(self) -> torch.Tensor:
        """(C, C) correlation of the units' activations over all positions seen."""
        mean = self.mean
        covariance = self.gram / max(self.count, 1) - torch.outer(mean, mean)
        deviation = covariance.diagonal().clamp_min(1e-12).sqrt()
        return covariance / torch.outer(deviation, deviation)


def layer_channels(backbone: VGG19Features) -> dict[str, int]:
    """Number of channels (units) of every layer of `backbone`."""
    channels, current = {}, 3
    for name, module in backbone.layers.named_children():
        current = getattr(module, "out_channels", current)
        channels[name] = current
    return channels


@dataclass
class SearchResult:
    layers: dict[str, LayerTopK]
    names: list[str]  # image names, by index
    sizes: list[tuple[int, int] | None]  # original (width, height), None if unreadable
    scales: list[int]
    skipped: list[str]  # "name: reason" of unreadable files

    def view_size(self, image: int, scale: int) -> tuple[int, int]:
        return scaled_size(*cast(tuple[int, int], self.sizes[image]), self.scales[scale])


def search_units(
    backbone: VGG19Features,
    dataset: ScaledImages,
    layers: Sequence[str],
    k: int = 9,
    per_image: int | None = 1,
    spacing: float = 0.5,
    min_inside: float = 0.0,
    batch_size: int = 8,
    workers: int = 0,
    device: torch.device | str = "cpu",
    progress: Callable[[Iterable], Iterable] | None = None,
) -> SearchResult:
    """Stream `dataset` through `backbone`; keep each unit's top-k patches over all images.

    per_image: the most patches of one image a unit may keep (None or 0: no limit other
    than k). min_inside: only positions whose receptive field is at least this fraction
    inside the image are candidates (the mean activations use every position). Returns the running
    top-k of every unit of every layer in `layers`.
    """
    check_layer_names(layers)
    if k < 1:
        raise UserError(f"k={k}: must be a positive number of patches per unit")
    picks = k if not per_image else min(int(per_image), k)
    fields = backbone_receptive_fields(backbone)
    channels = layer_channels(backbone)
    state = {name: LayerTopK(name, channels[name], k, fields[name], device) for name in layers}
    radius = {name: suppression_radius(fields[name], spacing) for name in layers}
    names = [dataset.name(i) for i in range(len(dataset))]
    sizes: list[tuple[int, int] | None] = [None] * len(dataset)
    skipped: list[str] = []
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=_keep_list)
    batches = progress(loader) if progress else loader
    backbone = backbone.to(device)
    with torch.inference_mode():
        for batch in batches:
            good = []
            for item in batch:
                if "error" in item:
                    skipped.append(f"{item['name']}: {item['error']}")
                    log.warning("skipping an unreadable file: %s", item["error"])
                else:
                    sizes[item["index"]] = tuple(item["size"])
                    good.append(item)
            if good:
                _search_batch(backbone, good, state, radius, picks, spacing, min_inside, batch_size, device)
    return SearchResult(state, names, sizes, list(dataset.scales), skipped)


def _search_batch(backbone, items, state, radius, picks, spacing, min_inside, batch_size, device) -> None:
    """Forward every view of `items` (grouped by shape), then fold their candidates into `state`."""
    layers = list(state)
    n_scales = len(items[0]["views"])
    per_view: dict[tuple[int, int], dict[str, Candidates]] = {}
    groups: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for i, item in enumerate(items):
        for s, view in enumerate(item["views"]):
            groups.setdefault(tuple(view.shape[-2:]), []).append((i, s))
    for shape, members in groups.items():
        step = max(1, min(batch_size, MAX_BATCH_PIXELS // (shape[0] * shape[1])))
        for start in range(0, len(members), step):
            chunk = members[start : start + step]
            images = torch.stack([items[i]["views"][s] for i, s in chunk]).to(device)
            outputs = backbone(images, layers)
            for name in layers:
                activations = outputs[name].float()
                state[name].add_sums(activations)
                allowed = allowed_positions(
                    state[name].rf,
                    tuple(activations.shape[-2:]),
                    cast(tuple[int, int], tuple(images.shape[-2:])),
                    min_inside,
                )
                values, ys, xs = view_candidates(activations, picks, radius[name], allowed)
                for j, (i, s) in enumerate(chunk):
                    scale = torch.full_like(ys[j], s)
                    per_view.setdefault((i, s), {})[name] = Candidates(values[j], scale, ys[j], xs[j])
            del outputs
    for name in layers:
        merged, image_index = [], []
        for i, item in enumerate(items):
            views = [per_view[(i, s)][name] for s in range(n_scales)]
            view_sizes = [tuple(item["views"][s].shape[-1:-3:-1]) for s in range(n_scales)]
            candidates = merge_scales(views, state[name].rf, view_sizes, tuple(item["size"]), picks, spacing)
            merged.append(candidates)
            image_index.append(torch.full_like(candidates.y, item["index"]))
        state[name].merge(Candidates.cat(merged), torch.cat(image_index, dim=1))


# `data.scales=auto`: the first of these whose scan stays within AUTO_PIXEL_BUDGET pixels
# in all (counting every image as square), else the last.
AUTO_SCALES = ([256, 384, 512, 768], [256, 384, 512], [256, 512], [256, 384], [256])
AUTO_PIXEL_BUDGET = 10_000_000


def auto_scales(images: int) -> list[int]:
    """Several scales for a few images (the 9 bundled ones get all four), one for many."""
    for scales in AUTO_SCALES:
        if images * sum(s * s for s in scales) <= AUTO_PIXEL_BUDGET:
            return list(scales)
    return list(AUTO_SCALES[-1])


def check_scales(scales: Sequence[int]) -> list[int]:
    if not scales:
        raise UserError("data.scales is empty: give at least one long-side size in px, e.g. data.scales=[224]")
    for scale in scales:
        if not isinstance(scale, int) or isinstance(scale, bool) or scale < MIN_SIZE:
            raise UserError(f"data.scales: {scale!r} is not a size in px of at least {MIN_SIZE}")
    return [int(s) for s in scales]
