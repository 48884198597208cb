"""The exact loss and gradient of a style transfer, computed tile by tile.

Memory is bounded by the tile, not the image. Each tile is a crop of the image run through
the backbone; it owns a rectangle of the image (its core, aligned to the deepest used
layer's stride) and keeps, at every used layer, only the feature positions of its core. The
crop adds a margin that covers those positions' receptive fields, so a kept activation is
the whole-image one to float rounding: the crop's origin is a multiple of the total stride
(the feature grids line up), and where the crop stops inside the image, no kept position
sees its zero padding. Where it stops at the image's edge, the padding is the image's own.

One evaluation is two passes over the tiles:

1. without gradients: the content distance of each layer (a sum over positions) and the
   style statistics (sums over positions of F_p F_p^T, of F_p, of the positions' mask
   weights), added up over the tiles. The module's own `combine` turns the distances
   computed from them (src/losses.py: `style_distance_from_moments`) into the loss terms,
   and autograd gives dJ/d(each sum);
2. each tile again, with gradients: its own share of every sum, weighted by dJ/d(that sum),
   back-propagated to its crop's pixels. The sums are linear in the tiles' shares, so the
   tiles' gradients add up to the exact dJ/dx.

On several processes (src/nst/distributed.py) each computes the tiles it owns, and the
leader adds their shares and gradients up in the same order as one process: the same sums,
bit for bit. The TV term is computed on the whole image (three channels: cheap). The style image's
targets are computed from statistics summed the same way, so a style image larger than a
tile works too. The histogram loss sorts all of a layer's activations at once and has no
form in sums: tiled runs refuse it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from src.backbone.receptive_field import ReceptiveField, feature_size, receptive_fields
from src.common.errors import UserError
from src.nst.distributed import GRADIENT, TARGETS, TERMS, TileGroup, leading, owned, split_by_cost
from src.nst.losses import (
    content_loss,
    content_norm,
    gram_matrix,
    lapack_threads,
    style_distance_from_moments,
    style_norm,
    style_target,
    tv_loss,
    tv_norm,
)
from src.nst.masks import layer_mask

if TYPE_CHECKING:
    from src.backbone.vgg import VGG19Features

TILED_STYLE_LOSSES = ("gram", "mean_cov")


@dataclass(frozen=True)
class AxisSpan:
    """One tile along one axis: the crop's pixels [start, stop) and, per layer, the whole
    image's feature indices [first, last) that the tile keeps."""

    start: int
    stop: int
    kept: dict[str, tuple[int, int]]


@dataclass(frozen=True)
class Tile:
    rows: AxisSpan
    cols: AxisSpan

    def crop(self, image: torch.Tensor) -> torch.Tensor:
        return image[..., self.rows.start : self.rows.stop, self.cols.start : self.cols.stop]

    def kept_in_crop(self, name: str, stride: int) -> tuple[slice, slice]:
        """The kept positions of layer `name` in the crop's own feature map."""
        (top, bottom), (left, right) = self.rows.kept[name], self.cols.kept[name]
        row0, col0 = self.rows.start // stride, self.cols.start // stride
        return slice(top - row0, bottom - row0), slice(left - col0, right - col0)

    def kept_in_image(self, name: str) -> tuple[slice, slice]:
        (top, bottom), (left, right) = self.rows.kept[name], self.cols.kept[name]
        return slice(top, bottom), slice(left, right)

    def keeps(self, name: str) -> bool:
        (top, bottom), (left, right) = self.rows.kept[name], self.cols.kept[name]
        return bottom > top and right > left


# The last tile of pass 1, kept with its graph: the tile, its crop, its shares.
KeptTile = tuple[Tile, torch.Tensor, dict[tuple, torch.Tensor]]


def axis_spans(length: int, core: int, fields: dict[str, ReceptiveField], sizes: dict[str, int]) -> list[AxisSpan]:
    """Tiles along one axis of `length` pixels with cores of about `core` pixels (a multiple of
    the deepest layer's stride); `sizes` are the layers' feature-map lengths on this axis."""
    stride = max(field.stride for field in fields.values())
    deepest = max(fields.values(), key=lambda field: field.stride)
    core = max(stride, core // stride * stride)
    cuts = list(range(0, length, core))
    spans = []
    for begin, end in zip(cuts, [*cuts[1:], length]):
        kept: dict[str, tuple[int, int]] = {}
        for name, field in fields.items():
            first = min(begin // field.stride, sizes[name])
            last = sizes[name] if end == length else min(end // field.stride, sizes[name])
            kept[name] = (first, max(first, last))
        used = [(fields[name], first, last) for name, (first, last) in kept.items() if last > first]
        if not used:
            continue
        start = max(0, min(field.span(first)[0] for field, first, _ in used))
        stop = min(length, max(field.span(last - 1)[1] for field, _, last in used))
        # Aligned down to the stride; at least the deepest receptive field long, so that every
        # layer of the backbone has positions even where only shallow layers keep any.
        start = max(0, min(start, stop - deepest.size)) // stride * stride
        spans.append(AxisSpan(start, stop, kept))
    return spans


def plan_tiles(height: int, width: int, tile_size: int, backbone: VGG19Features, layers: list[str]) -> list[Tile]:
    """Tiles covering a height x width image for the `layers` of `backbone`: every position of
    every layer is kept by exactly one tile."""
    every = receptive_fields(backbone.layers.named_children())
    fields = {name: field for name, field in every.items() if name in layers}
    rows = axis_spans(height, tile_size, fields, {name: feature_size(height, name, backbone) for name in layers})
    cols = axis_spans(width, tile_size, fields, {name: feature_size(width, name, backbone) for name in layers})
    return [Tile(row, col) for row in rows for col in cols]


def positions(features: torch.Tensor) -> torch.Tensor:
    """(1, N, h, w) -> (h * w, N) float32: one row per position."""
    return features.float().permute(0, 2, 3, 1).reshape(-1, features.shape[1])


def tile_moments(flat: torch.Tensor, weights: torch.Tensor | None, kind: str) -> dict[str, torch.Tensor]:
    """A tile's share of the moments `style_distance_from_moments` reads (float64 for mean_cov,
    as the whole-image W2 distance computes)."""
    if kind == "mean_cov":
        flat = flat.double()
    weights = None if weights is None else weights.to(flat.dtype)
    weighted = flat if weights is None else flat * weights[:, None]
    count = flat.new_tensor(float(flat.shape[0])) if weights is None else weights.sum()
    moments = {"count": count, "second": weighted.T @ flat}
    if kind == "mean_cov":
        moments["first"] = weighted.sum(0)
    return moments


def tile_owners(tiles: list[Tile], group: TileGroup | None) -> list[int]:
    """Each tile's process: balanced by the pixels of their crops (what a tile costs)."""
    if group is None:
        return [0] * len(tiles)
    return split_by_cost([(t.rows.stop - t.rows.start) * (t.cols.stop - t.cols.start) for t in tiles], group.world)


def add_shares(sums: dict[tuple, torch.Tensor], shares: dict[tuple, torch.Tensor]) -> None:
    for key, value in shares.items():
        sums[key] = value if key not in sums else sums[key] + value


class TiledObjective:
    """J and dJ/dx of `module`'s cost, exactly, in tiles of about `tile_size` pixels; on the
    processes of `group` (None: this one alone), each computing its share of the tiles."""

    def __init__(self, module: Any, tile_size: int, group: TileGroup | None = None) -> None:  # a StyleTransfer
        if module.style_loss_kind not in TILED_STYLE_LOSSES:
            raise UserError(
                f"style_loss={module.style_loss_kind} cannot be computed in tiles (it sorts all of a layer's "
                f"activations at once); use style_loss=gram or mean_cov, or a size that fits untiled"
            )
        self.module = module
        self.tile_size = int(tile_size)
        backbone = module.backbone
        self.layers = module.used_layers
        every = receptive_fields(backbone.layers.named_children())
        self.strides = {name: field.stride for name, field in every.items()}
        height, width = module.image.shape[-2:]
        self.tiles = plan_tiles(height, width, self.tile_size, backbone, self.layers)
        self.sizes = {
            name: (feature_size(height, name, backbone), feature_size(width, name, backbone)) for name in self.layers
        }
        self.group = group
        self.owners = tile_owners(self.tiles, group)
        self.mine = owned(self.owners, group)

    def tiles_of(self, rank: int) -> int:
        return self.owners.count(rank)

    # -- targets --------------------------------------------------------------------------

    @torch.no_grad()
    def compute_targets(self) -> None:
        """The module's content activations, style statistics and layer masks, computed in tiles."""
        if self.group is not None and self.group.leads:
            height, width = self.module.image.shape[-2:]
            self.group.announce(TARGETS, max(height, width), self.tile_size)
        self._compute_targets()
        self._done()

    def _done(self) -> None:
        if self.group is not None and self.group.leads:
            self.group.done()

    def _compute_targets(self) -> None:
        module = self.module
        source: torch.Tensor = module.content_image
        content_image = module.view(source)
        channels = layer_channels(module.backbone)
        # Every position is written by one tile: zeros elsewhere, so a sum over processes is exact.
        content = {
            name: torch.zeros(1, channels[name], *self.sizes[name], device=source.device)
            for name in module.content_layers
        }
        for index in self.mine:
            tile = self.tiles[index]
            features = module.backbone(tile.crop(content_image), list(module.content_layers))
            for name in module.content_layers:
                if tile.keeps(name):
                    rows, cols = tile.kept_in_image(name)
                    content[name][..., rows, cols] = features[name][..., *tile.kept_in_crop(name, self.strides[name])]
        if self.group is not None:
            for name in module.content_layers:
                self.group.sum_(content[name])
        module.content_targets = content
        targets = [self.style_targets(image) for image in module.style_images]
        module.style_target_sets = targets if self.group is None else self.group.broadcast_value(targets)
        # The per-layer factors of the terms (normalization), from the targets as the module computes them.
        module.content_norms = {name: content_norm(module.normalization, target) for name, target in content.items()}
        module.tv_norm = tv_norm(module.normalization, content_image)
        module.style_norm_sets = [
            {name: style_norm(module.normalization, target) for name, target in targets.items()}
            for targets in module.style_target_sets
        ]
        module.layer_masks = [
            None
            if mask is None
            else {name: layer_mask(mask.to(source.device), *self.sizes[name]) for name in module.style_layers}
            for mask in module.style_masks
        ]
        module.style_targets = {name: target["gram"] for name, target in module.style_target_sets[0].items()}

    def style_targets(self, image: torch.Tensor) -> dict[str, dict[str, torch.Tensor]]:
        """`style_target` of each style layer for a style image of any size: from its mean and
        covariance summed in tiles, through a small stand-in with the same moments."""
        module = self.module
        layers = list(module.style_layers)
        height, width = image.shape[-2:]
        tiles = plan_tiles(height, width, self.tile_size, module.backbone, layers)
        view = module.view(image)
        shares: dict[int, dict[str, dict[str, torch.Tensor]]] = {}
        for index in owned(tile_owners(tiles, self.group), self.group):
            tile = tiles[index]
            features = module.backbone(tile.crop(view), layers)
            shares[index] = {
                name: tile_moments(
                    positions(features[name][..., *tile.kept_in_crop(name, self.strides[name])]), None, "mean_cov"
                )
                for name in layers
                if tile.keeps(name)
            }
        everyone = shares if self.group is None else self.group.gather_values(shares)
        if everyone is None:  # a follower: the leader sends the targets
            return {}
        sums: dict[str, dict[str, torch.Tensor]] = {}
        for index in range(len(tiles)):  # in the tiles' order, whichever process computed them
            for name, share in everyone[index].items():
                sums[name] = share if name not in sums else {key: sums[name][key] + share[key] for key in share}
        return {name: moments_target(module.style_loss_kind, sums[name]) for name in layers}

    # -- the objective --------------------------------------------------------------------

    def _features(self, tile: Tile, image: torch.Tensor) -> dict[str, torch.Tensor]:
        return self._features_at(tile, tile.crop(image))

    def _shares(self, tile: Tile, features: dict[str, torch.Tensor]) -> dict[tuple, torch.Tensor]:
        """The tile's share of every summed quantity, keyed ("content", layer), or
        (layer, style index or None for unmasked, moment)."""
        module = self.module
        shares: dict[tuple, torch.Tensor] = {}
        for name in module.content_layers:
            if name in features:
                kept = features[name]
                rows, cols = tile.kept_in_image(name)
                fraction = kept.shape[-2] * kept.shape[-1] / math.prod(self.sizes[name])
                target = module.content_targets[name][..., rows, cols]
                shares[("content", name)] = content_loss(kept.float(), target) * fraction
        for name in module.style_layers:
            if name not in features:
                continue
            kept = features[name]
            flat: torch.Tensor | None = None  # a float32 copy of the activations, made only when needed
            for group, mask in self._groups(name):
                weights = None
                if mask is None and module.style_loss_kind == "gram":
                    # The whole-image loss's own Gram product (its backward runs in the backbone's
                    # dtype), unnormalised: sum over the tile's positions of F_p F_p^T.
                    count = kept.shape[-2] * kept.shape[-1]
                    shares[(name, group, "second")] = gram_matrix(kept)[0] * float(kept.shape[1] * count)
                    shares[(name, group, "count")] = torch.tensor(float(count), device=kept.device)
                    continue
                flat = positions(kept) if flat is None else flat
                if mask is not None:
                    rows, cols = tile.kept_in_image(name)
                    weights = mask[..., rows, cols].reshape(-1)
                for key, value in tile_moments(flat, weights, module.style_loss_kind).items():
                    shares[(name, group, key)] = value
        return shares

    def _groups(self, name: str) -> list[tuple[int | None, torch.Tensor | None]]:
        """The position weightings of a style layer: None (all positions, shared by every style
        without a mask) and one per masked style."""
        masks = self.module.layer_masks
        groups: list[tuple[int | None, torch.Tensor | None]] = []
        if any(m is None for m in masks):
            groups.append((None, None))
        groups += [(index, m[name]) for index, m in enumerate(masks) if m is not None]
        return groups

    def _sums(
        self, image: torch.Tensor, keep_last: bool = False
    ) -> tuple[dict[tuple, torch.Tensor] | None, KeptTile | None]:
        """Pass 1: every summed quantity over all tiles, without gradients (None on a follower,
        which sends its tiles' shares to the leader); with `keep_last`, the last tile this
        process computes keeps its crop and shares with their graph, returned too, so that
        pass 2 need not run that tile again (one crop's activations held: a pass-2 tile's)."""
        sums: dict[tuple, torch.Tensor] = {}
        kept: KeptTile | None = None
        computed: dict[int, dict[tuple, torch.Tensor]] = {}
        for index in self.mine:
            tile = self.tiles[index]
            last = keep_last and index == self.mine[-1]
            crop = tile.crop(image).clone().requires_grad_(last)
            with torch.set_grad_enabled(last):
                shares = self._shares(tile, self._features_at(tile, crop))
            if last:
                kept = (tile, crop, shares)
            detached = {key: value.detach() for key, value in shares.items()}
            if self.group is None:
                add_shares(sums, detached)
            else:
                computed[index] = detached
        if self.group is not None:
            everyone = self.group.gather_values(computed)
            if everyone is None:
                return None, kept
            for index in range(len(self.tiles)):  # in the tiles' order, as one process adds them
                add_shares(sums, everyone[index])
        return sums, kept

    def _terms(self, sums: dict[tuple, torch.Tensor], image: torch.Tensor) -> dict[str, torch.Tensor]:
        """The module's terms from the summed quantities (leaves of the graph, when they require grad)."""
        module = self.module
        content = {name: sums[("content", name)] for name in module.content_layers}
        style: dict[str, list[torch.Tensor]] = {}
        for name in module.style_layers:
            channels = sums[(name, self._groups(name)[0][0], "second")].shape[0]
            distances = []
            for index, masks in enumerate(module.layer_masks):
                group = None if masks is None else index
                moments = {key[2]: value for key, value in sums.items() if key[0] == name and key[1] == group}
                distances.append(
                    style_distance_from_moments(
                        module.style_loss_kind, moments, channels, module.style_target_sets[index][name]
                    )
                )
            style[name] = distances
        return module.combine(content, style, tv_loss(image) if module.tv_weight else None)

    def _ensure_targets(self) -> None:
        if not self.module.content_targets:
            self.compute_targets()

    def _announce(self, command: int, image: torch.Tensor) -> None:
        """The leader: the followers take part in the evaluation of `image` too."""
        if self.group is not None and self.group.leads:
            self.group.announce(command)
            self.group.broadcast(image)

    def terms(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """The loss terms at `image`, without gradients (one pass)."""
        self._ensure_targets()
        self._announce(TERMS, image)
        with torch.no_grad():
            sums, _ = self._sums(image)
            self._done()
            assert sums is not None  # the leader's
            return self._terms(sums, image)

    def terms_and_gradient(self, image: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The loss terms at `image` and dJ(total)/d(image), exactly (two passes)."""
        self._ensure_targets()
        self._announce(GRADIENT, image)
        result = self._terms_and_gradient(image.detach())
        self._done()
        assert result is not None  # the leader's
        return result

    def serve(self, command: int) -> None:
        """A follower's part of the leader's `command` (the leader broadcasts the image next)."""
        assert self.group is not None and not self.group.leads
        if command == TARGETS:
            with torch.no_grad():
                self._compute_targets()
            return
        image = self.group.broadcast(torch.empty_like(self.module.image))
        if command == TERMS:
            with torch.no_grad():
                self._sums(image)
        elif command == GRADIENT:
            self._terms_and_gradient(image)

    def _terms_and_gradient(self, image: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor] | None:
        summed, kept = self._sums(image, keep_last=True)
        terms: dict[str, torch.Tensor] = {}
        gradient = torch.zeros_like(image)
        weights: dict[tuple, torch.Tensor | None]
        if summed is not None:
            sums = {key: value.requires_grad_(value.is_floating_point()) for key, value in summed.items()}
            pixels = image.clone().requires_grad_(True)
            with torch.enable_grad():
                terms = self._terms(sums, pixels)
                leaves = [value for value in sums.values() if value.requires_grad]
                inputs = [*leaves, pixels] if self.module.tv_weight else leaves
                grads = torch.autograd.grad(terms["loss/total"], inputs, allow_unused=True)
            weights = {key: grad for key, grad in zip([k for k, v in sums.items() if v.requires_grad], grads)}
            if self.module.tv_weight and grads[-1] is not None:
                gradient = grads[-1].clone()
        if self.group is not None:
            weights = self.group.broadcast_value(weights if self.group.leads else None)
        # The tile kept from pass 1 first (its graph is freed by going first), then the others.
        # The gradients are added up in one process's order: the last tile, then the others.
        order = [len(self.tiles) - 1, *range(len(self.tiles) - 1)]
        rank = 0 if self.group is None else self.group.rank
        held: dict[int, torch.Tensor] = {}
        if kept is not None:
            held[self.mine[-1]] = self._crop_gradient(kept[1], kept[2], weights)
            del kept
        receiving = {}
        if self.group is not None and self.group.leads:  # the followers' tiles arrive while ours are computed
            receiving = {
                index: self.group.start_receive(
                    self.owners[index], image, (*image.shape[:-2], *tile_shape(tile)), index
                )
                for index, tile in ((index, self.tiles[index]) for index in order)
                if self.owners[index] != rank
            }
        sending = []
        for index in order:
            if self.owners[index] != rank:
                continue
            tile = self.tiles[index]
            if index not in held:
                crop = tile.crop(image).clone().requires_grad_(True)
                with torch.enable_grad():
                    shares = self._shares(tile, self._features_at(tile, crop))
                held[index] = self._crop_gradient(crop, shares, weights)
                del crop, shares  # this tile's activations, before the next tile's
            if self.group is None:
                self._add_crop(tile, held.pop(index), gradient)
            elif not self.group.leads:
                # Not waited on: the next tile is computed meanwhile. Sent in the order that the
                # leader receives in (NCCL matches sends to receives by order, not by tag).
                sending.append(self.group.send_to_leader(held.pop(index), index))
        for index in order if receiving or held else []:
            crop_gradient = held.pop(index) if index in held else receiving[index].result()
            self._add_crop(self.tiles[index], crop_gradient, gradient)
        for work in sending:
            work.wait()
        if not leading(self.group):
            return None
        return {key: value.detach() for key, value in terms.items()}, gradient

    @staticmethod
    def _crop_gradient(
        crop: torch.Tensor, shares: dict[tuple, torch.Tensor], weights: Mapping[tuple, torch.Tensor | None]
    ) -> torch.Tensor:
        """Pass 2 for one tile: its shares weighted by dJ/d(their sums), back-propagated to its crop."""
        with torch.enable_grad():
            surrogate = sum(
                (grad * shares[key]).sum() for key, grad in weights.items() if grad is not None and key in shares
            )
        if isinstance(surrogate, torch.Tensor) and surrogate.requires_grad:
            (crop_gradient,) = torch.autograd.grad(surrogate, crop)
            return crop_gradient
        return torch.zeros_like(crop)

    @staticmethod
    def _add_crop(tile: Tile, crop_gradient: torch.Tensor, gradient: torch.Tensor) -> None:
        gradient[..., tile.rows.start : tile.rows.stop, tile.cols.start : tile.cols.stop] += crop_gradient

    def _features_at(self, tile: Tile, crop: torch.Tensor) -> dict[str, torch.Tensor]:
        """The kept activations of a tile, from its crop of the image."""
        # In the backbone's dtype, as the whole-image loss reads them (moments are taken in float32).
        features = self.module.backbone(self.module.view(crop), self.layers, upcast=False)
        return {
            name: features[name][..., *tile.kept_in_crop(name, self.strides[name])]
            for name in self.layers
            if tile.keeps(name)
        }


def tile_shape(tile: Tile) -> tuple[int, int]:
    return tile.rows.stop - tile.rows.start, tile.cols.stop - tile.cols.start


def layer_channels(backbone: VGG19Features) -> dict[str, int]:
    """The number of channels of each of the backbone's layers."""
    channels: dict[str, int] = {}
    count = 3
    for name, layer in backbone.layers.named_children():
        count = getattr(layer, "out_channels", count)
        channels[name] = count
    return channels


def moments_target(kind: str, moments: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`style_target(kind, features)` for activations with these (unweighted, float64) moments.

    The stand-in has 2N positions mu +- sqrt(N) r_i (r_i the columns of the covariance's
    square root): the same mean, covariance and second moment as the real activations,
    which is all that the Gram and mean_cov targets read. Computed in float64; each entry
    then takes the dtype the module's own target has (from a float32 stand-in)."""
    count = moments["count"].double()
    mean = moments["first"] / count
    cov = moments["second"] / count - torch.outer(mean, mean)
    cov = (cov + cov.T) / 2
    with lapack_threads(cov):
        values, vectors = torch.linalg.eigh(cov)
    root = (vectors * values.clamp_min(0).sqrt()) @ vectors.T
    channels = mean.shape[0]
    flat = torch.cat([mean[:, None] + channels**0.5 * root, mean[:, None] - channels**0.5 * root], dim=1)
    stand_in = flat.reshape(1, channels, 2 * channels, 1)
    exact = style_target(kind, stand_in)
    dtypes = style_target(kind, stand_in.float())
    return {key: value.to(dtypes[key].dtype) for key, value in exact.items()}
