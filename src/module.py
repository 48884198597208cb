"""The LightningModule: its only trainable parameter is the generated image."""

from __future__ import annotations

import math
from typing import Callable, Iterable, Mapping

import pytorch_lightning as pl
import torch
from torch import nn

from src.backbone import VGG19Features
from src.losses import content_loss, gram_matrix, style_loss, tv_loss

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]

# The optimiser sees J times a constant that makes the largest pixel gradient at the start
# equal to this. L-BFGS is scale-invariant except for its raw-gradient steps (the first one,
# and whenever a curvature pair is rejected by torch's absolute 1e-10 threshold); unscaled,
# those move pixels by millions and the run diverges (seen at beta=1e5).
START_GRADIENT = 0.01


class StyleTransfer(pl.LightningModule):
    """Gatys et al. (2015): minimise alpha*J_content + beta*J_style + tv_weight*J_tv over pixels.

    Images are (1, 3, H, W) RGB tensors in [0, 1]; the image is clamped to that range
    after every optimiser step.
    """

    def __init__(
        self,
        backbone: VGG19Features,
        content_image: torch.Tensor,
        style_image: torch.Tensor,
        init_image: torch.Tensor,
        content_layers: Mapping[str, float],
        style_layers: Mapping[str, float],
        alpha: float,
        beta: float,
        tv_weight: float,
        optimizer: OptimizerFactory,
    ) -> None:
        super().__init__()
        self.content_layers = {str(k): float(v) for k, v in content_layers.items()}
        self.style_layers = {str(k): float(v) for k, v in style_layers.items()}
        self.alpha, self.beta, self.tv_weight = float(alpha), float(beta), float(tv_weight)
        # Plain values only: checkpoints must not hold configs or partials.
        self.save_hyperparameters(
            {"content_layers": self.content_layers, "style_layers": self.style_layers,
             "alpha": self.alpha, "beta": self.beta, "tv_weight": self.tv_weight}
        )
        self.backbone = backbone.freeze()
        self.image = nn.Parameter(init_image.detach().clone().contiguous())
        self.register_buffer("content_image", content_image.detach().clone(), persistent=False)
        self.register_buffer("style_image", style_image.detach().clone(), persistent=False)
        self.optimizer_factory = optimizer
        self.content_targets: dict[str, torch.Tensor] = {}
        self.style_targets: dict[str, torch.Tensor] = {}
        self.initial_losses: dict[str, float] = {}
        self.loss_scale = 1.0
        # The last image whose loss was finite, kept so a NaN loses nothing.
        self.last_good_image = self.image.detach().clone()
        self.last_good_step = 0
        # Checkpoints hold the image and optimiser state, not the frozen backbone.
        self.strict_loading = False

    # -- objective -------------------------------------------------------------------------

    @property
    def used_layers(self) -> list[str]:
        return list(dict.fromkeys([*self.content_layers, *self.style_layers]))

    @torch.no_grad()
    def compute_targets(self) -> None:
        """Content activations and style Gram matrices, computed once, without grad."""
        content = self.backbone(self.content_image, list(self.content_layers))
        self.content_targets = {name: content[name].detach() for name in self.content_layers}
        style = self.backbone(self.style_image, list(self.style_layers))
        self.style_targets = {name: gram_matrix(style[name]).detach() for name in self.style_layers}

    def losses(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every weighted term of the cost; keys are the names logged."""
        if not self.content_targets:
            self.compute_targets()
        features = self.backbone(image, self.used_layers)
        terms: dict[str, torch.Tensor] = {}
        content = sum(w * content_loss(features[n], self.content_targets[n]) for n, w in self.content_layers.items())
        style = image.new_zeros(())
        for name, weight in self.style_layers.items():
            term = self.beta * weight * style_loss(features[name], self.style_targets[name])
            terms[f"loss/style/{name}"] = term
            style = style + term
        terms["loss/content"] = self.alpha * content
        terms["loss/style"] = style
        terms["loss/tv"] = self.tv_weight * tv_loss(image) if self.tv_weight else image.new_zeros(())
        terms["loss/total"] = terms["loss/content"] + terms["loss/style"] + terms["loss/tv"]
        return terms

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """The loss terms at the current image, as plain floats."""
        return self.evaluate_image(self.image)

    @torch.no_grad()
    def evaluate_image(self, image: torch.Tensor) -> dict[str, float]:
        """The loss terms at any image of the right size, as plain floats."""
        return {key: value.item() for key, value in self.losses(image.to(self.image)).items()}

    # -- Lightning hooks -------------------------------------------------------------------

    def gradient_scale(self) -> float:
        """START_GRADIENT / max |dJ/dpixel| at the current image (1 if the gradient is zero)."""
        image = self.image.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            (gradient,) = torch.autograd.grad(self.losses(image)["loss/total"], image)
        peak = gradient.abs().max().item()
        return START_GRADIENT / peak if peak > 0 and math.isfinite(peak) else 1.0

    def on_fit_start(self) -> None:
        self.compute_targets()
        if not self.initial_losses:
            self.initial_losses = self.evaluate()
            self.loss_scale = self.gradient_scale()
        self.last_good_image = self.image.detach().clone()
        self.last_good_step = self.global_step

    def training_step(self, batch: object, batch_index: int) -> torch.Tensor:
        terms = self.losses(self.image)
        main = {k: terms[k] for k in ("loss/total", "loss/content", "loss/style", "loss/tv")}
        self.log_dict(main, prog_bar=True, on_step=True, on_epoch=False, batch_size=1)
        detail = {k: v for k, v in terms.items() if k.startswith("loss/style/")}
        self.log_dict(detail, prog_bar=False, on_step=True, on_epoch=False, batch_size=1)
        loss = terms["loss/total"]
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"the loss became {loss.item()} at step {self.global_step}; "
                f"kept the image of step {self.last_good_step}"
            )
        self.last_good_image = self.image.detach().clone()
        self.last_good_step = self.global_step
        return loss * self.loss_scale

    def optimizer_step(self, *args: object, **kwargs: object) -> None:
        super().optimizer_step(*args, **kwargs)
        # Clamp here, before any callback (snapshots, checkpoints) sees the step's image.
        with torch.no_grad():
            self.image.clamp_(0.0, 1.0)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("backbone.")}
        checkpoint["style_transfer"] = {"loss_scale": self.loss_scale, "initial_losses": self.initial_losses}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        saved = checkpoint["style_transfer"]
        self.loss_scale = saved["loss_scale"]
        self.initial_losses = saved["initial_losses"]

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory([self.image])
