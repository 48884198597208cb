"""One video frame's optimisation: the style-transfer cost J plus Ruder et al.'s temporal terms.

    J_frame = J + temporal_weight * sum_j  1/D * sum_k c_jk * (x_k - w_jk)^2

w_j is stylised frame t-j warped into frame t by the content's optical flow, c_j its
reliability mask (exclusive between the j: each pixel is tied to its nearest reliable
previous frame), D the number of pixel values (3 H W). Pixel values are taken on the
0..255 scale, the one the backbone sees, so that a difference of one grey level costs 1.
With normalization=relative the temporal terms are scaled as the content term is, so that
temporal_weight keeps its ratio to alpha in either normalisation (docs/video.md).
Without temporal targets (the first frame) J_frame is J, term for term.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from src.transfer.module import StyleTransfer, map_tensors

PIXEL_SCALE = 255.0


@dataclass
class TemporalTarget:
    """A previous stylised frame warped into this one, where to trust it, and its name (t-1, t-2...)."""

    image: torch.Tensor  # (1, 3, H, W) in [0, 1]
    mask: torch.Tensor  # (1, 1, H, W) in [0, 1]
    name: str


def temporal_loss(image: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """1/D * sum of mask * squared difference, on the 0..255 scale."""
    return (mask * (image - target).square()).mean() * PIXEL_SCALE**2  # the mean over (1, 3, H, W): 1/D


class VideoFrameTransfer(StyleTransfer):
    """StyleTransfer with the temporal terms of a video frame (`temporal`, may be empty).

    Logged terms: loss/temporal (their sum) and loss/temporal/<name> for each previous frame."""

    def __init__(
        self, *args: Any, temporal: Sequence[TemporalTarget] = (), temporal_weight: float = 0.0, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.temporal_weight = float(temporal_weight)
        self.temporal_names = [target.name for target in temporal]
        self.temporal_images = [target.image.detach().clone() for target in temporal]
        self.temporal_masks = [target.mask.detach().clone() for target in temporal]

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> VideoFrameTransfer:
        super()._apply(fn, recurse)
        self.temporal_images = map_tensors(fn, self.temporal_images)  # type: ignore[assignment]
        self.temporal_masks = map_tensors(fn, self.temporal_masks)  # type: ignore[assignment]
        return self

    def losses(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        terms = super().losses(image)
        temporal = image.new_zeros(())
        weight = self.temporal_weight * self.content_scale()
        for name, target, mask in zip(self.temporal_names, self.temporal_images, self.temporal_masks, strict=True):
            if not self.temporal_weight:
                break
            term = weight * temporal_loss(image, target, mask)
            terms[f"loss/temporal/{name}"] = term
            temporal = temporal + term
        terms["loss/temporal"] = temporal
        terms["loss/total"] = terms["loss/total"] + temporal
        return terms

    def content_scale(self) -> float:
        """The content term's normalisation factor, averaged over the content layers by weight:
        1 with normalization=gatys, 1 / d(0, P) with relative."""
        total = sum(self.content_layers.values())
        if not total:
            return 1.0
        return sum(w * self.content_norms[n] for n, w in self.content_layers.items()) / total
