"""visualize(cfg, output_dir): top-k patches of chosen units, as grids and topk.json.

Data flows one way: image folder -> streaming top-k search -> unit choice -> crops ->
grids (+ optional activation maximisation) -> files (+ optional W&B).
"""

from __future__ import annotations

import functools
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, cast

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from PIL import Image
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from src.backbone.receptive_field import backbone_receptive_fields
from src.backbone.vgg import (
    VGG19Features,
    backbone_from_config,
    check_layer_names,
)
from src.common.devices import resolve_compute_dtype, target_device
from src.common.errors import UserError
from src.common.images import load_image, resize, save_image, to_pil
from src.common.paths import ASSETS_DIR, resolve_input_path
from src.render.strip import side_by_side
from src.units.grid import BACKGROUND, crop_patch, layer_grid
from src.units.search import (
    LayerTopK,
    ScaledImages,
    SearchResult,
    auto_scales,
    check_scales,
    find_images,
    layer_channels,
    search_units,
)


def layer_list(cfg: DictConfig) -> list[str]:
    names = cfg.layer_names
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, (list, ListConfig)) or not names:
        raise UserError(f"layer_names={names!r}: give a list of layer names, e.g. layer_names=[relu1_1,relu3_1]")
    return [str(name) for name in names]


def logger_kind(cfg: DictConfig) -> str:
    """'none', 'wandb' or 'tensorboard': the loggers that can show the grids, which are images."""
    target = cfg.logger.get("_target_") if isinstance(cfg.logger, DictConfig) else cfg.logger
    if target in (None, "none"):
        return "none"
    if target == "src.transfer.loggers.wandb_logger":
        return "wandb"
    if str(target).endswith("TensorBoardLogger"):
        return "tensorboard"
    raise UserError(
        f"logger={target}: src.visualize logs its grids, which are images; "
        "use logger=none, logger=wandb or logger=tensorboard"
    )


# -- config checks ----------------------------------------------------------------------------


def _positive_int(value: Any, key: str, allow_zero: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if allow_zero else 1):
        raise UserError(f"{key}={value!r}: must be an integer >= {0 if allow_zero else 1}")
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def validate(cfg: DictConfig) -> None:
    """Check what the config's types cannot; name the key in every message."""
    layers = layer_list(cfg)
    check_layer_names(layers)
    if len(set(layers)) != len(layers):
        raise UserError(f"layer_names={layers}: a layer is named twice")
    _positive_int(cfg.k, "k")
    _positive_int(cfg.num_units, "num_units")
    if cfg.per_image not in (None, "auto"):
        _positive_int(cfg.per_image, "per_image", allow_zero=True)
    if not _is_number(cfg.spacing) or cfg.spacing < 0:
        raise UserError(f"spacing={cfg.spacing!r}: must be a number >= 0 (0: patches of one image may overlap)")
    if not _is_number(cfg.min_inside) or not 0 <= cfg.min_inside <= 1:
        raise UserError(f"min_inside={cfg.min_inside!r}: must be a fraction between 0 and 1")
    if cfg.distinct is not None and (not _is_number(cfg.distinct) or not -1 <= cfg.distinct <= 1):
        raise UserError(f"distinct={cfg.distinct!r}: must be null or a correlation between -1 and 1 (1: off)")
    if cfg.data.scales != "auto":
        check_scales(list(cfg.data.scales) if isinstance(cfg.data.scales, ListConfig) else [cfg.data.scales])
    _positive_int(cfg.data.batch_size, "data.batch_size")
    _positive_int(cfg.data.workers, "data.workers", allow_zero=True)
    if cfg.data.limit is not None:
        _positive_int(cfg.data.limit, "data.limit")
    logger_kind(cfg)
    if cfg.maximize.enabled:
        _positive_int(cfg.maximize.steps, "maximize.steps")


def requested_units(cfg: DictConfig, layers: list[str], channels: dict[str, int]) -> dict[str, list[int] | None]:
    """The units asked for per layer (None: choose by mean activation); range-checked."""
    units = cfg.units
    if units is None:
        return {name: None for name in layers}
    if isinstance(units, int) and not isinstance(units, bool):
        units = [units]
    wanted: dict[str, list[int] | None]
    if isinstance(units, ListConfig):
        wanted = {name: list(units) for name in layers}
    elif isinstance(units, DictConfig):
        unknown = [name for name in units if name not in layers]
        if unknown:
            raise UserError(f"units: {unknown} not in layer_names={layers}")
        wanted = {name: (list(units[name]) if name in units else None) for name in layers}
    else:
        raise UserError(f"units={units!r}: give null, a list such as units=[3,17], or per layer units={{relu1_1:[3]}}")
    for name, chosen in wanted.items():
        if chosen is not None and not chosen:
            raise UserError(f"units: no unit given for {name}; name at least one, or use units=null")
        for unit in chosen or []:
            if isinstance(unit, bool) or not isinstance(unit, int) or not 0 <= unit < channels[name]:
                raise UserError(f"unit {unit!r} is out of range for {name}, which has units 0..{channels[name] - 1}")
    return wanted


def patches_per_image(setting: int | str | None, k: int, images: int) -> int | None:
    """The per-image limit; 'auto': 1 with at least 3k images, else ceil(3k / images).

    With few images (the 9 bundled ones), one patch per image would force every unit to
    show every image; allowing a few lets a unit's k patches come from about a third of them.
    """
    if setting == "auto":
        return max(1, min(k, math.ceil(3 * k / max(images, 1))))
    return cast("int | None", setting or None)


def image_folder(cfg: DictConfig) -> tuple[Path, list[Path]]:
    folder = resolve_input_path(cfg.data.dir) if cfg.data.dir else ASSETS_DIR
    files = find_images(folder)
    if cfg.data.limit is not None:
        files = files[: cfg.data.limit]
    return folder, files


# -- results ------------------------------------------------------------------------------------


def choose_units(top: LayerTopK, wanted: list[int] | None, count: int, distinct: float | None = None) -> list[int]:
    """`wanted`, or the `count` units with the highest mean activation.

    With `distinct` below 1, a unit whose activations correlate more than `distinct` with
    those of a unit already chosen is passed over (a near-copy: another red detector, say).
    """
    if wanted is not None:
        return wanted
    order = [int(u) for u in torch.argsort(top.mean.cpu(), descending=True, stable=True)]
    if distinct is None or distinct >= 1:
        return order[:count]
    correlation = top.correlation.cpu()
    chosen: list[int] = []
    for unit in order:
        if all(correlation[unit, other] <= distinct for other in chosen):
            chosen.append(unit)
            if len(chosen) == count:
                return chosen
    passed_over = [u for u in order if u not in chosen]
    return chosen + passed_over[: count - len(chosen)]


def patch_records(result: SearchResult, top: LayerTopK, unit: int) -> list[dict[str, Any]]:
    """The unit's best patches, best first, as plain data (also written to topk.json)."""
    records = []
    for rank in range(top.k):
        value = float(top.values[unit, rank])
        image = int(top.image[unit, rank])
        if image < 0 or value == -math.inf:
            break
        scale, y, x = int(top.scale[unit, rank]), int(top.y[unit, rank]), int(top.x[unit, rank])
        width, height = result.view_size(image, scale)
        box = top.rf.box(y, x)
        clipped = top.rf.clipped_box(y, x, width, height)
        original_w, original_h = cast(tuple[int, int], result.sizes[image])  # known for a found patch
        sx, sy = original_w / width, original_h / height
        records.append(
            {
                "rank": rank + 1,
                "activation": value,
                "image": result.names[image],
                "image_size": [original_w, original_h],
                "scale": result.scales[scale],
                "scanned_size": [width, height],
                "position": [y, x],
                "box": list(box),
                "box_clipped": list(clipped),
                "box_original": [
                    round(clipped[0] * sx),
                    round(clipped[1] * sy),
                    round(clipped[2] * sx),
                    round(clipped[3] * sy),
                ],
            }
        )
    return records


def make_loader(folder: Path, files: list[Path]):
    by_name = {}
    for path in files:
        try:
            by_name[path.relative_to(folder).as_posix()] = path
        except ValueError:
            by_name[str(path)] = path

    @functools.lru_cache(maxsize=24)
    def scanned(name: str, size: tuple[int, int]) -> Image.Image:
        return resize(load_image(by_name[name], role="data"), size)

    return scanned


# -- the run --------------------------------------------------------------------------------------


def visualize(cfg: DictConfig, output_dir: str | os.PathLike) -> dict[str, Any]:
    """Find, crop and draw the top-k patches of the chosen units; returns what topk.json holds."""
    validate(cfg)
    output_dir = Path(output_dir)
    layers = layer_list(cfg)
    folder, files = image_folder(cfg)
    if cfg.data.scales == "auto":
        scales = auto_scales(len(files))
    else:
        scales = check_scales(list(cfg.data.scales) if isinstance(cfg.data.scales, ListConfig) else [cfg.data.scales])
    device = target_device(cfg.device.accelerator)
    backbone = backbone_from_config(cfg.backbone, layers, resolve_compute_dtype(cfg.device.compute_dtype, device))
    channels = layer_channels(backbone)
    wanted = requested_units(cfg, layers, channels)
    output_dir.mkdir(parents=True, exist_ok=True)

    per_image = patches_per_image(cfg.per_image, cfg.k, len(files))
    where = "the bundled sample images in assets/" if not cfg.data.dir else str(folder)
    print(
        f"scanning {len(files)} images from {where} at long side {scales} px for {', '.join(layers)} on {device}; "
        f"at most {per_image or cfg.k} patch(es) per image per unit",
        file=sys.stderr,
    )
    started = time.perf_counter()
    dataset = ScaledImages(files, folder, scales)

    def progress(batches):
        with tqdm(
            total=len(files),
            unit="img",
            desc="scanning",
            file=sys.stderr,
            mininterval=0.5 if sys.stderr.isatty() else 5.0,
        ) as bar:
            for batch in batches:
                yield batch
                bar.update(len(batch))

    with logging_redirect_tqdm():  # a skipped file's warning does not tear the progress bar
        result = search_units(
            backbone,
            dataset,
            layers,
            k=cfg.k,
            per_image=per_image,
            spacing=float(cfg.spacing),
            min_inside=float(cfg.min_inside),
            batch_size=cfg.data.batch_size,
            workers=cfg.data.workers,
            device=device,
            progress=progress,
        )
    search_seconds = time.perf_counter() - started
    if all(size is None for size in result.sizes):
        raise UserError(f"none of the {len(files)} image files in {folder} could be read")

    scanned = make_loader(folder, files)
    fields = backbone_receptive_fields(backbone)
    report: dict[str, Any] = {
        "data": {"dir": str(folder), "images": len(files), "skipped": result.skipped, "scales": scales},
        "backbone": OmegaConf.to_container(cfg.backbone, enum_to_str=True),
        "k": cfg.k,
        "per_image": per_image,
        "spacing": cfg.spacing,
        "min_inside": cfg.min_inside,
        "num_units": cfg.num_units,
        "distinct": cfg.distinct,
        "search_seconds": search_seconds,
        "layers": {},
    }
    grids: dict[str, Path] = {}
    grid_images = []
    for name in layers:
        top = result.layers[name]
        units = choose_units(top, wanted[name], cfg.num_units, cfg.distinct)
        maximised = maximize(cfg, backbone, name, units, top, device, output_dir) if cfg.maximize.enabled else None
        entries, blocks = [], []
        for position, unit in enumerate(units):
            records = patch_records(result, top, unit)
            patches = [crop_patch(scanned(r["image"], tuple(r["scanned_size"])), tuple(r["box"])) for r in records]
            entry: dict[str, Any] = {"unit": unit, "mean_activation": float(top.mean[unit]), "patches": records}
            extra = None
            if maximised is not None:
                extra = maximised["crops"][position]
                entry["maximized"] = maximised["entries"][position]
            entries.append(entry)
            blocks.append((f"unit {unit}", patches, extra))
        title = f"{name}: top {cfg.k} patches of {len(units)} units (receptive field {fields[name].size} px)"
        found = [len(entry["patches"]) for entry in entries]
        if min(found, default=cfg.k) < cfg.k:
            short = sum(1 for count in found if count < cfg.k)
            title = (
                f"{name}: up to {cfg.k} patches of {len(units)} units, {min(found)}-{max(found)} found "
                f"(receptive field {fields[name].size} px)"
            )
            print(
                f"{name}: {short} of {len(units)} units have fewer than {cfg.k} patches ({min(found)}-{max(found)}): "
                f"{len(files)} images at {per_image or 'any number of'} patches each, spaced {cfg.spacing} receptive "
                "fields apart, do not hold more; use more images (data.dir=...), per_image=0 or spacing=0",
                file=sys.stderr,
            )
        grid = layer_grid(title, blocks, fields[name].size, cfg.k, cfg.grid.min_cell, cfg.grid.max_cell)
        grids[name] = output_dir / f"{name}.png"
        grid.save(grids[name])
        grid_images.append(grid)
        report["layers"][name] = {
            "receptive_field": fields[name].as_dict(),
            "channels": top.channels,
            "grid": grids[name].name,
            "units": entries,
        }
    overview = side_by_side(grid_images, height=cfg.grid.overview_height, gap=16, margin=16, background=BACKGROUND)
    overview.save(output_dir / "overview.png")
    report["overview"] = "overview.png"
    report["seconds"] = time.perf_counter() - started
    (output_dir / "topk.json").write_text(json.dumps(report, indent=2))
    if logger_kind(cfg) != "none":
        log_grids(cfg, output_dir, grids)
    print(
        f"wrote {len(grids)} grids, overview.png and topk.json to {output_dir} "
        f"(search {search_seconds:.1f} s, total {report['seconds']:.1f} s)",
        file=sys.stderr,
    )
    return report


def maximize(
    cfg: DictConfig,
    backbone: VGG19Features,
    layer: str,
    units: list[int],
    top: LayerTopK,
    device: torch.device,
    output_dir: Path,
) -> dict:
    """Activation-maximisation images for `units`, scaled by each unit's best real activation."""
    from src.units.activation_max import maximize_units

    settings = cast(dict[str, Any], OmegaConf.to_container(cfg.maximize, enum_to_str=True))
    settings.pop("enabled")
    steps = settings.pop("steps")
    best = [max(float(top.values[u, 0]), 1e-3) for u in units]
    print(f"activation maximisation: {layer}, {len(units)} units, {steps} steps", file=sys.stderr)
    result = maximize_units(
        backbone,
        layer,
        units,
        steps=steps,
        accelerator="gpu" if device.type == "cuda" else "cpu",
        scale=best,
        progress=True,
        **settings,
    )
    folder = output_dir / "maximize"
    folder.mkdir(exist_ok=True)
    crops, entries = [], []
    for unit, image, crop, activation, reference in zip(units, result.images, result.crops, result.activations, best):
        path = folder / f"{layer}_unit{unit}.png"
        save_image(image.unsqueeze(0), path)
        crops.append(to_pil(crop.unsqueeze(0)))
        entries.append(
            {"image": f"maximize/{path.name}", "activation": activation, "ratio_to_best_patch": activation / reference}
        )
    return {"crops": crops, "entries": entries}


def log_grids(cfg: DictConfig, output_dir: Path, grids: dict[str, Path]) -> None:
    """The grids and the overview as images in the configured logger (W&B or TensorBoard)."""
    from hydra.utils import instantiate

    from src.transfer.loggers import log_config, log_image

    logger = instantiate(cfg.logger, save_dir=str(output_dir))
    succeeded = False
    try:
        config = cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))
        log_config(logger, config, OmegaConf.to_yaml(cfg))
        for name, path in [*grids.items(), ("overview", output_dir / "overview.png")]:
            with Image.open(path) as image:
                log_image(logger, f"units/{name}", image.convert("RGB"), step=0, caption=path.name)
        succeeded = True
    finally:
        logger.finalize("success" if succeeded else "failed")
        if logger_kind(cfg) == "wandb":
            import wandb

            wandb.finish(exit_code=0 if succeeded else 1)
