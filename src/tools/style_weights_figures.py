"""`python -m src.tools.style_weights_figures`: the measurements and pictures of docs/style_weights.md.

One photograph x seven paintings (the five bundled ones and two details cut from them) at the
defaults, once with `normalization=gatys` and once with `normalization=relative`; a beta sweep
1e3, 1e4, 1e5 on one pair. Every final image is then judged by one yardstick that does not
depend on the normalisation: the relative style distance per layer, ||G - A||^2 / ||A||^2, and
the relative content distance ||F - P||^2 / ||P||^2 at relu4_2.

Runs go to outputs/style_weights/<name>/ (a finished run is reused, so an interrupted call can be
repeated); the pictures to docs/images/style_weights_*.jpg, the numbers to
outputs/style_weights/measurements.json, and a summary is printed.

    python -m src.tools.style_weights_figures [--size 256] [--steps 50] [--only paintings,beta]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any, cast

import torch
from hydra import compose, initialize_config_dir
from PIL import Image, ImageDraw

from src.cli.app import configure
from src.common.images import load_image, to_tensor
from src.common.paths import PROJECT_ROOT, asset_path
from src.nst.losses import RELATIVE_STYLE_UNIT
from src.render.text import font
from src.tools.runs import cached_run

RUNS = PROJECT_ROOT / "outputs" / "style_weights"
CONTENT = "content/tubingen.jpg"
# (name, painting under assets/style/, crop box as fractions (left, top, right, bottom) or None)
PAINTINGS: list[tuple[str, str, tuple[float, float, float, float] | None]] = [
    ("starry_night", "starry_night.jpg", None),
    ("shipwreck", "shipwreck.jpg", None),
    ("matisse", "woman-with-hat-matisse.jpg", None),
    ("picasso", "picasso_selfport1907.jpg", None),
    ("seated_nude", "seated-nude.jpg", None),
    ("starry_moon", "starry_night.jpg", (0.72, 0.0, 1.0, 0.42)),  # the moon: yellow on blue, round strokes
    ("matisse_wall", "woman-with-hat-matisse.jpg", (0.0, 0.0, 0.42, 0.4)),  # the background's colour patches
]
SWEEP_PAIR = "starry_night"
SWEEP_BETAS = ("1e3", "1e4", "1e5")
LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")


def style_file(name: str) -> Path:
    """The painting (or the detail of one) as an image file; details are cut once into RUNS/styles/."""
    _, file, box = next(entry for entry in PAINTINGS if entry[0] == name)
    if box is None:
        return Path(asset_path(f"style/{file}"))
    path = RUNS / "styles" / f"{name}.png"
    if not path.is_file():
        painting = load_image(asset_path(f"style/{file}"))
        width, height = painting.size
        left, top, right, bottom = box
        path.parent.mkdir(parents=True, exist_ok=True)
        box_px = (round(left * width), round(top * height), round(right * width), round(bottom * height))
        painting.crop(box_px).save(path)
    return path


def run(name: str, overrides: list[str], size: int, steps: int) -> Path:
    """`python -m src.run` with these overrides into RUNS/<name> (kept; a finished run is reused)."""
    return cached_run(name, RUNS / f"{size}px_{steps}steps" / name, [f"size={size}", f"steps={steps}", *overrides])


class Judge:
    """Relative distances of any image to the photograph and one painting, at the run's size:
    a module with normalization=relative, unit layer weights and beta = 1 / RELATIVE_STYLE_UNIT,
    so that its terms are the relative distances themselves."""

    def __init__(self, style: Path, size: int) -> None:
        from src.transfer.build import build_module

        overrides = [
            f"size={size}",
            "device=cpu",
            "device.compute_dtype=float32",
            "logger=none",
            f"content.path={asset_path(CONTENT)}",
            f"style.path={style}",
            "normalization=relative",
            f"beta={1 / RELATIVE_STYLE_UNIT}",
            "layers.content={relu4_2: 1.0}",
            "layers.style={" + ", ".join(f"{layer}: 1.0" for layer in LAYERS) + "}",
        ]
        with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
            cfg = compose("config", overrides=overrides)
        self.module = build_module(cfg)
        self.module.compute_targets()

    def __call__(self, image_path: Path | None = None) -> dict[str, Any]:
        """The distances of a run's final image (or, without one, of the photograph itself)."""
        photograph = cast(torch.Tensor, self.module.content_image).cpu()
        image = photograph if image_path is None else to_tensor(load_image(image_path))
        terms = self.module.evaluate_image(image)
        style = {layer: terms[f"loss/style/{layer}"] for layer in LAYERS}
        pixels = (image - photograph).pow(2).mean().sqrt().item()
        return {
            "style_layers": style,
            "style": statistics.mean(style.values()),
            "content": terms["loss/content"],
            "pixel_rms_change": pixels,
        }


def shares(metrics: dict[str, Any]) -> dict[str, float]:
    """Each layer's share of the final style term, as the run's own objective weighs it."""
    layers = metrics["final_style_layers"]
    total = sum(layers.values())
    return {layer: value / total for layer, value in layers.items()}


def measure_paintings(size: int, steps: int) -> dict[str, Any]:
    record: dict[str, Any] = {}
    for name, _, _ in PAINTINGS:
        style = style_file(name)
        judge = Judge(style, size)
        record[name] = {}
        for normalization in ("gatys", "relative"):
            overrides = [f"style.path={style}", f"normalization={normalization}"]
            folder = run(f"{name}_{normalization}", overrides, size, steps)
            metrics = json.loads((folder / "metrics.json").read_text())
            record[name][normalization] = {
                **judge(folder / "final.png"),
                "shares": shares(metrics),
                "wall_seconds": metrics["wall_seconds"],
                "folder": str(folder),
            }
        record[name]["photograph"] = judge()
    return record


def measure_sweep(size: int, steps: int) -> dict[str, Any]:
    style = style_file(SWEEP_PAIR)
    judge = Judge(style, size)
    record = {}
    for beta in SWEEP_BETAS:
        # beta=1e4 is the default: the paintings' relative run.
        name = f"{SWEEP_PAIR}_relative" if beta == "1e4" else f"{SWEEP_PAIR}_relative_beta{beta}"
        folder = run(name, [f"style.path={style}", "normalization=relative", f"beta={beta}"], size, steps)
        record[beta] = {**judge(folder / "final.png"), "folder": str(folder)}
    return record


# -- pictures -----------------------------------------------------------------------------------


def grid(rows: list[tuple[str, list[tuple[str, Image.Image]]]], height: int) -> Image.Image:
    """Rows of images scaled to one height, a row title on the left and a caption under each."""
    typeface = font(max(11, height // 12))
    title_width, gap, caption = 120, 4, height // 6
    width = max(sum(round(im.width * height / im.height) + gap for _, im in cells) - gap for _, cells in rows)
    sheet = Image.new("RGB", (title_width + width, len(rows) * (height + caption + gap)), "white")
    draw = ImageDraw.Draw(sheet)
    for index, (title, cells) in enumerate(rows):
        y = index * (height + caption + gap)
        draw.multiline_text((4, y + height // 2 - caption), title, fill="black", font=typeface, spacing=2)
        x = title_width
        for label, image in cells:
            size = (round(image.width * height / image.height), height)
            scaled = image.convert("RGB").resize(size, Image.Resampling.LANCZOS)
            sheet.paste(scaled, (x, y))
            draw.text((x + 2, y + height + 1), label, fill="black", font=typeface)
            x += scaled.width + gap
    return sheet


def save_jpeg(picture: Image.Image, path: Path, limit: int = 250_000) -> None:
    """JPEG at quality 85, lowered until the file is under `limit` bytes."""
    for quality in (85, 80, 75, 70, 60):
        picture.save(path, quality=quality, optimize=True)
        if path.stat().st_size < limit:
            return


def paintings_figure(record: dict[str, Any], out: Path, height: int) -> Path:
    paintings = [(name, load_image(style_file(name))) for name, _, _ in PAINTINGS]

    def results(normalization: str) -> list[tuple[str, Image.Image]]:
        return [
            (
                f"style {record[name][normalization]['style']:.2f}",
                load_image(Path(record[name][normalization]["folder"]) / "final.png"),
            )
            for name, _, _ in PAINTINGS
        ]

    picture = grid(
        [("painting", paintings), ("gatys\n(before)", results("gatys")), ("relative\n(default)", results("relative"))],
        height,
    )
    path = out / "style_weights_paintings.jpg"
    save_jpeg(picture, path)
    return path


def sweep_figure(record: dict[str, Any], out: Path, height: int) -> Path:
    cells = [("photograph", load_image(asset_path(CONTENT))), ("painting", load_image(style_file(SWEEP_PAIR)))]
    cells += [(f"beta={beta}", load_image(Path(record[beta]["folder"]) / "final.png")) for beta in SWEEP_BETAS]
    picture = grid([("relative", cells)], height)
    path = out / "style_weights_beta.jpg"
    save_jpeg(picture, path)
    return path


def summary(paintings: dict[str, Any], sweep: dict[str, Any]) -> None:
    if paintings:
        print("painting        | rel. style gatys | rel. style relative | rel. content gatys | rel. content relative")
        for name, entry in paintings.items():
            print(
                f"{name:15s} | {entry['gatys']['style']:16.3f} | {entry['relative']['style']:19.3f} | "
                f"{entry['gatys']['content']:18.3f} | {entry['relative']['content']:21.3f}"
            )
        for normalization in ("gatys", "relative"):
            styles = [entry[normalization]["style"] for entry in paintings.values()]
            spread = statistics.pstdev(styles) / statistics.mean(styles)
            print(
                f"{normalization}: relative style distance {min(styles):.3f} .. {max(styles):.3f}, "
                f"max/min {max(styles) / min(styles):.2f}, spread (stdev/mean) {spread:.2f}"
            )
            mean_shares = {
                layer: statistics.mean(entry[normalization]["shares"][layer] for entry in paintings.values())
                for layer in LAYERS
            }
            print(
                "  mean per-layer share of the final style term: "
                + ", ".join(f"{k} {v:.1%}" for k, v in mean_shares.items())
            )
    for beta, entry in sweep.items():
        print(
            f"beta={beta}: relative style {entry['style']:.3f}, relative content {entry['content']:.3f}, "
            f"pixel RMS change {entry['pixel_rms_change']:.3f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--height", type=int, default=150, help="panel height in the pictures, px")
    parser.add_argument("--only", default="paintings,beta", help="comma-separated: paintings, beta")
    parser.add_argument("--out", default=str(PROJECT_ROOT / "docs" / "images"))
    args = parser.parse_args()
    configure()  # the config schema and the ${asset:} resolver, for the judges' configs
    wanted = set(args.only.split(","))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    paintings = measure_paintings(args.size, args.steps) if "paintings" in wanted else {}
    sweep = measure_sweep(args.size, args.steps) if "beta" in wanted else {}
    (RUNS / "measurements.json").write_text(
        json.dumps({"size": args.size, "steps": args.steps, "paintings": paintings, "beta": sweep}, indent=2)
    )
    for path in ([paintings_figure(paintings, out, args.height)] if paintings else []) + (
        [sweep_figure(sweep, out, args.height)] if sweep else []
    ):
        print(f"{path} ({path.stat().st_size // 1024} KB)", flush=True)
    summary(paintings, sweep)


if __name__ == "__main__":
    main()
