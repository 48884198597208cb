"""The LightningModule: its only trainable parameter is the generated image."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import pytorch_lightning as pl
import torch
from torch import nn

from src.backbone.vgg import VGG19Features
from src.nst.color import grey, with_chroma
from src.nst.lbfgs import LBFGS
from src.nst.losses import content_loss, content_norm, style_distance, style_norm, style_target, tv_loss, tv_norm
from src.nst.masks import layer_mask

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]

# The optimiser sees J times a constant that makes the largest pixel gradient at the start
# equal to this. torch's L-BFGS is scale-invariant except for its raw-gradient steps (the first one,
# and whenever a curvature pair is rejected by torch's absolute 1e-10 threshold); unscaled,
# those move pixels by millions and a strongly weighted run diverges.
START_GRADIENT = 0.01


@dataclass
class Style:
    """One style image of a blend: its share of beta (weights already normalised to sum 1),
    an optional (1, 1, H, W) mask at the output's size, and a name for the logged per-style loss."""

    image: torch.Tensor
    weight: float = 1.0
    mask: torch.Tensor | None = None
    name: str = "style"


def map_tensors(fn: Callable[[torch.Tensor], torch.Tensor], tree: object) -> object:
    """`fn` applied to every tensor in nested dicts and lists."""
    if isinstance(tree, torch.Tensor):
        return fn(tree)
    if isinstance(tree, dict):
        return {key: map_tensors(fn, value) for key, value in tree.items()}
    if isinstance(tree, list):
        return [map_tensors(fn, value) for value in tree]
    return tree


class StyleTransfer(pl.LightningModule):
    """Gatys et al. (2015): minimise alpha*J_content + beta*J_style + tv_weight*J_tv over pixels.

    Images are (1, 3, H, W) RGB tensors in [0, 1]; the image is clamped to that range
    after every optimiser step.

    Controls (docs/controls.md), all off by default: `styles` (several style images with
    weights and masks; `style_image` is then the first one's), `style_loss` (gram, mean_cov,
    histogram), `color="luminance"` (the network sees luminance only and the image keeps the
    content's chroma) and `ema` (the output is an exponential moving average of the image).

    `normalization` (src/nst/losses.py): `relative` divides every term by its target's magnitude,
    so that layer weights are real shares and beta means the same for every painting;
    `gatys` keeps the raw terms.
    """

    # Buffers registered in __init__ (nn.Module's __getattr__ types them as Tensor | Module).
    content_image: torch.Tensor
    style_image: torch.Tensor
    ema_image: torch.Tensor | None

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
        styles: Sequence[Style] | None = None,
        style_loss: str = "gram",
        color: str = "none",
        ema: float = 0.0,
        normalization: str = "relative",
    ) -> None:
        super().__init__()
        self.content_layers = {str(k): float(v) for k, v in content_layers.items()}
        self.style_layers = {str(k): float(v) for k, v in style_layers.items()}
        self.alpha, self.beta, self.tv_weight = float(alpha), float(beta), float(tv_weight)
        # Plain values only: checkpoints must not hold configs or partials.
        self.save_hyperparameters(
            {
                "content_layers": self.content_layers,
                "style_layers": self.style_layers,
                "alpha": self.alpha,
                "beta": self.beta,
                "tv_weight": self.tv_weight,
            }
        )
        self.style_loss_kind = style_loss
        self.color = color
        self.ema = float(ema)
        self.normalization = normalization
        self.backbone = backbone.freeze()
        self.register_buffer("content_image", content_image.detach().clone(), persistent=False)
        if color == "luminance":
            # Only the luminance is optimised: the image carries the content's chroma throughout.
            init_image = with_chroma(init_image, content_image)
        self.image = nn.Parameter(init_image.detach().clone().contiguous())
        self.register_buffer("style_image", style_image.detach().clone(), persistent=False)
        styles = list(styles) if styles else [Style(style_image, 1.0, None, "style")]
        self.style_weights = [float(s.weight) for s in styles]
        self.style_names = [s.name for s in styles]
        self.style_masks = [None if s.mask is None else s.mask.detach().clone() for s in styles]
        for index, style in enumerate(styles[1:], start=1):
            self.register_buffer(f"style_image_{index}", style.image.detach().clone(), persistent=False)
        self.optimizer_factory = optimizer
        self.content_targets: dict[str, torch.Tensor] = {}
        self.style_targets: dict[str, torch.Tensor] = {}  # layer -> Gram matrix of the first style
        self.style_target_sets: list[dict[str, dict[str, torch.Tensor]]] = []  # per style, per layer
        self.layer_masks: list[dict[str, torch.Tensor] | None] = []
        # Per-layer factors of each term, from the targets (1 under normalization=gatys).
        self.content_norms: dict[str, float] = {}
        self.style_norm_sets: list[dict[str, float]] = []  # per style, per layer
        self.tv_norm = 1.0
        # The running average of the image (ema > 0): a sum of weights and a weighted sum.
        self.ema_weight = 0.0
        if self.ema:
            self.register_buffer("ema_image", torch.zeros_like(self.image.detach()), persistent=False)
        else:
            self.ema_image = None
        self.initial_losses: dict[str, float] = {}
        self.step_terms: dict[str, torch.Tensor] = {}  # the last training step's loss terms
        self.loss_scale = 1.0
        # The last image whose loss was finite, kept so a NaN loses nothing.
        self.last_good_image = self.image.detach().clone()
        self.last_good_step = 0
        # Checkpoints hold the image and optimiser state, not the frozen backbone.
        self.strict_loading = False

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> StyleTransfer:
        # Lightning moves the module to the GPU for a fit and back to the CPU at its end. The
        # targets are nested plain attributes, not buffers: move them with it.
        super()._apply(fn, recurse)
        for name in (
            "content_targets",
            "style_target_sets",
            "layer_masks",
            "style_masks",
            "last_good_image",
            "step_terms",
        ):
            setattr(self, name, map_tensors(fn, getattr(self, name)))
        if self.style_target_sets:
            self.style_targets = {name: target["gram"] for name, target in self.style_target_sets[0].items()}
        return self

    # -- objective -------------------------------------------------------------------------

    @property
    def used_layers(self) -> list[str]:
        return list(dict.fromkeys([*self.content_layers, *self.style_layers]))

    @property
    def style_images(self) -> list[torch.Tensor]:
        return [self.style_image, *(getattr(self, f"style_image_{i}") for i in range(1, len(self.style_weights)))]

    def view(self, image: torch.Tensor) -> torch.Tensor:
        """What the network sees of an image: itself, or its luminance (color=luminance)."""
        return grey(image) if self.color == "luminance" else image

    @torch.no_grad()
    def compute_targets(self) -> None:
        """Content activations and style statistics (Gram matrices...), computed once, without grad."""
        masked = any(mask is not None for mask in self.style_masks)
        # With masks, the style layers' sizes are needed too (to resize the masks).
        content = self.backbone(
            self.view(self.content_image), self.used_layers if masked else list(self.content_layers)
        )
        self.content_targets = {name: content[name].detach() for name in self.content_layers}
        self.content_norms = {
            name: content_norm(self.normalization, target) for name, target in self.content_targets.items()
        }
        self.tv_norm = tv_norm(self.normalization, self.view(self.content_image))
        self.style_target_sets, self.layer_masks, self.style_norm_sets = [], [], []
        for image, mask in zip(self.style_images, self.style_masks):
            style = self.backbone(self.view(image), list(self.style_layers))
            targets = {name: style_target(self.style_loss_kind, style[name]) for name in self.style_layers}
            self.style_target_sets.append(targets)
            self.style_norm_sets.append(
                {name: style_norm(self.normalization, target) for name, target in targets.items()}
            )
            if mask is None:
                self.layer_masks.append(None)
            else:
                mask = mask.to(self.content_image.device)
                self.layer_masks.append(
                    {name: layer_mask(mask, *content[name].shape[-2:]) for name in self.style_layers}
                )
        self.style_targets = {name: target["gram"] for name, target in self.style_target_sets[0].items()}

    def losses(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every weighted term of the cost; keys are the names logged."""
        if not self.content_targets:
            self.compute_targets()
        # Activations in the backbone's dtype: the Gram loss's backward then runs in bf16 too.
        features = self.backbone(self.view(image), self.used_layers, upcast=False)
        content = {n: content_loss(features[n].float(), self.content_targets[n]) for n in self.content_layers}
        style = {
            name: [
                style_distance(
                    self.style_loss_kind,
                    features[name],
                    self.style_target_sets[index][name],
                    None
                    if self.layer_masks[index] is None
                    else cast(dict[str, torch.Tensor], self.layer_masks[index])[name],
                )
                for index in range(len(self.style_weights))
            ]
            for name in self.style_layers
        }
        return self.combine(content, style, tv_loss(image) if self.tv_weight else None)

    def combine(
        self, content: Mapping[str, torch.Tensor], style: Mapping[str, Sequence[torch.Tensor]], tv: torch.Tensor | None
    ) -> dict[str, torch.Tensor]:
        """The weighted terms from each layer's distances: `content[layer]`, `style[layer][style
        index]` and the TV loss (None: tv_weight is 0). Shared by whole-image and tiled
        evaluation (src/nst/tiling.py), which computes the same distances tile by tile."""
        any_term = next(iter(content.values()))
        terms: dict[str, torch.Tensor] = {}
        content_term = cast(
            torch.Tensor, sum(w * self.content_norms[n] * content[n] for n, w in self.content_layers.items())
        )
        total_style = any_term.new_zeros(())
        per_style = [any_term.new_zeros(()) for _ in self.style_weights]
        for name, weight in self.style_layers.items():
            term = any_term.new_zeros(()) if len(self.style_weights) > 1 else None
            for index, share in enumerate(self.style_weights):
                part = self.beta * weight * share * self.style_norm_sets[index][name] * style[name][index]
                if len(self.style_weights) > 1:
                    per_style[index] = per_style[index] + part
                term = part if term is None else term + part
            assert term is not None  # style_weights is never empty
            terms[f"loss/style/{name}"] = term
            total_style = total_style + term
        if len(self.style_weights) > 1:
            for name, value in zip(self.style_names, per_style):
                terms[f"loss/blend/{name}"] = value
        terms["loss/content"] = self.alpha * content_term
        terms["loss/style"] = total_style
        terms["loss/tv"] = self.tv_weight * self.tv_norm * tv if tv is not None else any_term.new_zeros(())
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
        # A fresh run (not a resume). Our L-BFGS sizes its steps in pixels and is
        # scale-invariant: skip the extra forward and backward that the scale costs.
        if not self.initial_losses and not isinstance(self.trainer.optimizers[0], LBFGS):
            self.loss_scale = self.gradient_scale()
        self.last_good_image = self.image.detach().clone()
        self.last_good_step = self.global_step

    def training_step(self, batch: object, batch_index: int) -> torch.Tensor:
        terms = self.losses(self.image)
        if not self.initial_losses:  # the first step sees the initial image: no forward of its own
            self.initial_losses = {key: value.item() for key, value in terms.items()}
        # Logged by src.transfer.callbacks.LossHistory, after the step: not through self.log, slow per key.
        self.step_terms = {key: value.detach() for key, value in terms.items()}
        loss = terms["loss/total"]
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"the loss became {loss.item()} at step {self.global_step}; "
                f"kept the image of step {self.last_good_step}"
            )
        self.last_good_image = self.image.detach().clone()
        self.last_good_step = self.global_step
        return loss * self.loss_scale

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        # Clamp here, before any callback (snapshots, checkpoints) sees the step's image.
        with torch.no_grad():
            self.image.clamp_(0.0, 1.0)
            if self.color == "luminance":
                # Adam's per-pixel steps can move the chroma; put the content's back.
                self.image.copy_(with_chroma(self.image, self.content_image))
            if self.ema:
                assert self.ema_image is not None  # registered when ema > 0
                self.ema_image.mul_(self.ema).add_(self.image, alpha=1.0 - self.ema)
                self.ema_weight = self.ema * self.ema_weight + (1.0 - self.ema)

    def output_image(self) -> torch.Tensor:
        """The result: the image, or its moving average over the last steps (ema > 0)."""
        if not self.ema or self.ema_weight == 0.0:
            return self.image.detach()
        assert self.ema_image is not None  # registered when ema > 0
        return (self.ema_image / self.ema_weight).clamp(0.0, 1.0)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("backbone.")}
        checkpoint["style_transfer"] = {"loss_scale": self.loss_scale, "initial_losses": self.initial_losses}
        if self.ema:
            assert self.ema_image is not None  # registered when ema > 0
            checkpoint["style_transfer"]["ema"] = {
                "image": self.ema_image.detach().cpu().clone(),
                "weight": self.ema_weight,
            }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        saved = checkpoint["style_transfer"]
        self.loss_scale = saved["loss_scale"]
        self.initial_losses = saved["initial_losses"]
        if self.ema and "ema" in saved:
            assert self.ema_image is not None  # registered when ema > 0
            self.ema_image.copy_(saved["ema"]["image"])
            self.ema_weight = saved["ema"]["weight"]

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory([self.image])
