"""Activation maximisation: optimise an image, from noise, to excite one unit.

The unit is one channel of a layer at the centre of a small image whose size is chosen
so that the unit's receptive field sits in the middle with `margin` pixels around it.
Without regularisation the result is high-frequency noise; the usual remedies are used
(Yosinski et al. 2015, Olah et al. 2017): random jitter of the image at every step, a
Gaussian blur every few steps, a total-variation penalty and a decay towards grey after
every step. The default optimiser is gradient ascent with each image's gradient scaled to
a mean magnitude of 1 (Yosinski et al.): unlike Adam, which moves every pixel at the same
pace, it leaves the rim of the receptive field, which the unit barely sees, near grey.
Several units of one layer are optimised together, one image each. Jitter and blur are
given in units of the layer's stride (the spacing of its units in input pixels), so that
one setting suits every layer: no jitter at relu1_1, 8 px at relu5_1 with the defaults.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from src.backbone.receptive_field import ReceptiveField, backbone_receptive_fields
from src.backbone.vgg import VGG19Features
from src.common.errors import UserError
from src.units.grid import PAD_COLOUR


def centred_canvas(rf: ReceptiveField, margin: int) -> tuple[int, int]:
    """(image side, unit index) so that unit (index, index) sees the middle of the image."""
    half = Fraction(rf.size - 1, 2)
    index = max(0, math.ceil((half + margin - rf.start) / rf.stride))
    centre = rf.start + index * rf.stride
    return int(2 * centre + 1), index


def gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=image.dtype, device=image.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = image.shape[1]
    padded = F.pad(image, (radius, radius, radius, radius), mode="replicate")
    out = F.conv2d(padded, kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), groups=channels)
    return F.conv2d(out, kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels)


def total_variation(image: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between neighbouring pixels, per image: (N,)."""
    dy = (image[:, :, 1:, :] - image[:, :, :-1, :]).abs().mean(dim=(1, 2, 3))
    dx = (image[:, :, :, 1:] - image[:, :, :, :-1]).abs().mean(dim=(1, 2, 3))
    return dx + dy


class ActivationMaximization(pl.LightningModule):
    """The only trainable parameter is a batch of images, one per unit, RGB in [0, 1]."""

    # Buffers registered in __init__.
    units: torch.Tensor
    scale: torch.Tensor
    grey: torch.Tensor

    def __init__(
        self,
        backbone: VGG19Features,
        layer: str,
        units: Sequence[int],
        scale: Sequence[float] | None = None,
        margin: int = 4,
        jitter: float = 0.5,
        blur_every: int = 4,
        blur_sigma: float = 0.125,
        tv_weight: float = 2.0,
        decay: float = 0.01,
        lr: float = 0.05,
        noise: float = 0.2,
        seed: int = 0,
        optimizer: str = "sgd",
    ) -> None:
        super().__init__()
        self.save_hyperparameters(
            {
                "layer": layer,
                "units": list(map(int, units)),
                "margin": margin,
                "jitter": jitter,
                "blur_every": blur_every,
                "blur_sigma": blur_sigma,
                "tv_weight": tv_weight,
                "decay": decay,
                "lr": lr,
                "noise": noise,
                "seed": seed,
                "optimizer": optimizer,
            }
        )
        if optimizer not in ("sgd", "adam"):
            raise UserError(f"maximize.optimizer={optimizer!r}: must be sgd or adam")
        self.optimizer_name = optimizer
        self.backbone = backbone.freeze()
        self.layer = layer
        self.rf = backbone_receptive_fields(backbone)[layer]
        # Regularisation scales with the layer: a relu1_1 unit sees 3 px, a relu5_1 unit 156.
        self.jitter = int(round(jitter * self.rf.stride))
        self.size, self.index = centred_canvas(self.rf, max(int(margin), self.jitter))
        self.blur_every, self.blur_sigma = int(blur_every), float(blur_sigma) * self.rf.stride
        self.tv_weight, self.decay, self.lr = float(tv_weight), float(decay), float(lr)
        self.register_buffer("units", torch.tensor(list(units), dtype=torch.long), persistent=False)
        self.register_buffer(
            "scale",
            torch.tensor(list(scale) if scale is not None else [1.0] * len(units)).clamp_min(1e-6),
            persistent=False,
        )
        self.register_buffer(
            "grey", torch.tensor(PAD_COLOUR, dtype=torch.float32).view(1, 3, 1, 1) / 255.0, persistent=False
        )
        generator = torch.Generator().manual_seed(int(seed))
        init = self.grey + noise * (torch.rand(len(units), 3, self.size, self.size, generator=generator) - 0.5)
        self.image = nn.Parameter(init.clamp(0, 1))
        self.generator = generator

    def activations(self, image: torch.Tensor, before_relu: bool = False) -> torch.Tensor:
        """Each image's own unit at the centre position: (U,).

        before_relu: for a ReLU layer, the conv output under it, which also has a gradient
        where the ReLU is off (a unit that starts at 0 would otherwise never move).
        """
        layer = self.layer.replace("relu", "conv") if before_relu else self.layer
        features = self.backbone(image, [layer])[layer]
        rows = torch.arange(len(self.units), device=features.device)
        return features[rows, self.units, self.index, self.index]

    def training_step(self, batch: object, batch_index: int) -> torch.Tensor:
        image: torch.Tensor = self.image
        if self.jitter > 0:
            dy, dx = (int(v) for v in torch.randint(-self.jitter, self.jitter + 1, (2,), generator=self.generator))
            image = torch.roll(image, shifts=(dy, dx), dims=(2, 3))
        reached = self.activations(image, before_relu=True) / self.scale
        loss = -reached.sum()
        if self.tv_weight:
            loss = loss + self.tv_weight * total_variation(self.image).sum()
        self.log("maximize/activation", reached.mean(), prog_bar=True, on_step=True, batch_size=1)
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Each image's gradient scaled to a mean magnitude of 1: a step of `lr` moves pixels by
        lr on average, more where the unit is most sensitive (the middle of its field), and
        hardly at all where it barely sees (its rim)."""
        grad = self.image.grad
        if grad is not None:
            grad.div_(grad.abs().mean(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12))

    def on_train_batch_end(self, outputs: object, batch: object, batch_index: int) -> None:
        with torch.no_grad():
            if self.decay:
                self.image.sub_(self.grey).mul_(1.0 - self.decay).add_(self.grey)
            if self.blur_every > 0 and self.blur_sigma > 0 and (self.global_step % self.blur_every == 0):
                self.image.copy_(gaussian_blur(self.image, self.blur_sigma))
            self.image.clamp_(0.0, 1.0)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        if self.optimizer_name == "adam":
            return torch.optim.Adam([self.image], lr=self.lr)
        return torch.optim.SGD([self.image], lr=self.lr)

    @torch.no_grad()
    def final_activations(self) -> torch.Tensor:
        """Unnormalised activation of every unit on its own (un-jittered) image."""
        return self.activations(self.image)

    def receptive_field_crops(self) -> torch.Tensor:
        """The images cut to the unit's receptive field: (U, 3, rf, rf)."""
        left, top, right, bottom = self.rf.box(self.index, self.index)
        return self.image.detach()[:, :, top:bottom, left:right]


@dataclass
class MaximizeResult:
    images: torch.Tensor  # (U, 3, S, S) whole optimised images
    crops: torch.Tensor  # (U, 3, rf, rf) their receptive-field part
    activations: list[float]  # the unit's activation on its image


def maximize_units(
    backbone: VGG19Features,
    layer: str,
    units: Sequence[int],
    steps: int = 200,
    accelerator: str = "cpu",
    scale: Sequence[float] | None = None,
    progress: bool = False,
    **settings,
) -> MaximizeResult:
    """Optimise one image per unit of `layer` with a Lightning Trainer; see ActivationMaximization."""
    module = ActivationMaximization(backbone, layer, units, scale=scale, **settings)
    trainer = pl.Trainer(
        accelerator=accelerator,
        devices=1,
        max_epochs=1,
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=progress,
        num_sanity_val_steps=0,
        log_every_n_steps=max(1, steps),
    )
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.zeros(steps)), batch_size=1)
    with warnings.catch_warnings():
        # The frozen backbone is meant to stay in eval mode; the dummy loader needs no workers.
        warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode.*")
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        trainer.fit(module, train_dataloaders=loader)
    module = module.cpu()
    return MaximizeResult(
        module.image.detach().clone(),
        module.receptive_field_crops().clone(),
        [float(v) for v in module.final_activations()],
    )
