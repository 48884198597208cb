"""`python -m src.tools.controls_figures`: the pictures of docs/controls.md, made by the project.

Each picture is a row of labelled panels: inputs, then the results of `python -m src.run`
commands that differ in one control. Runs go to outputs/controls/<name>/ (a finished run
is reused, so an interrupted call can be repeated); pictures to docs/images/controls_*.png.

    python -m src.tools.controls_figures [--size 256] [--steps 80] [--beta 1e5] [--only color,blend] [--out docs/images]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from src.common.images import load_image
from src.common.paths import PROJECT_ROOT, asset_path
from src.render.strip import side_by_side
from src.render.text import pretty_value
from src.tools.runs import cached_run

RUNS = PROJECT_ROOT / "outputs" / "controls"
SKY = "docs/images/tubingen_sky_mask.png"
GROUND = "docs/images/tubingen_ground_mask.png"
BLEND = "style.blend=[{path:shipwreck,weight:%s}]"


def figures(size: int, steps: int, beta: float) -> dict[str, list[tuple[str, str | list[str]]]]:
    """Picture name -> panels: (label, an image path) or (label, the overrides of a run).

    Every run gets `beta=<beta>` first (a panel may override it); color=luminance gets 10x."""
    content, starry, shipwreck = (
        asset_path("content/tubingen.jpg"),
        asset_path("style/starry_night.jpg"),
        asset_path("style/shipwreck.jpg"),
    )
    adam = ["optimizer=adam", "optimizer.lr=0.05", f"steps={2 * steps}"]
    return {
        "color": [
            ("content", content),
            ("style", starry),
            ("color=none", []),
            (
                f"color=luminance beta={pretty_value(f'{10 * beta:e}')}",
                ["color=luminance", f"beta={pretty_value(f'{10 * beta:e}')}"],
            ),
            ("color=match", ["color=match"]),
        ],
        "blend": [
            ("Starry Night", []),
            ("style.weight=0.7 + 0.3 shipwreck", ["style.weight=0.7", BLEND % 0.3]),
            ("style.weight=0.3 + 0.7 shipwreck", ["style.weight=0.3", BLEND % 0.7]),
            ("style=shipwreck", ["style=shipwreck"]),
        ],
        "scale": [
            ("style_scale=0.5", ["style_scale=0.5"]),
            ("style_scale=1", []),
            ("style_scale=2", ["style_scale=2"]),
        ],
        "losses": [
            ("style_loss=gram", []),
            ("style_loss=mean_cov", ["style_loss=mean_cov"]),
            ("style_loss=histogram", ["style_loss=histogram"]),
        ],
        "average": [
            ("Adam: the last image", adam),
            ("Adam, ema=0.95: the average", [*adam, "ema=0.95"]),
        ],
        "masks": [
            ("sky mask", str(PROJECT_ROOT / SKY)),
            ("style", starry),
            ("style", shipwreck),
            ("masked blend", [f"style.mask={SKY}", f"style.blend=[{{path:shipwreck,mask:{GROUND}}}]"]),
        ],
        "pyramid": [
            # From noise, where the large-scale structure has to be built. Equal compute: the
            # pyramid's 3 levels of 3/4 steps cost 3/4 * (1/16 + 1/4 + 1) = 0.98 finest-level steps each.
            # beta=1e4: the content's large shapes have to show, not only the painting's.
            ("single scale, init=noise beta=1e4", ["init=noise", "beta=1e4"]),
            (
                "pyramid=factor2, init=noise beta=1e4",
                [
                    "init=noise",
                    "beta=1e4",
                    "pyramid=factor2",
                    f"steps={steps * 3 // 4}",
                    f"pyramid.steps={steps * 3 // 4}",
                ],
            ),
        ],
    }


def run(name: str, overrides: list[str], size: int, steps: int, beta: float) -> Path:
    # The raw terms these pictures and the numbers of docs/controls.md were made with (the
    # default normalization=relative would need another beta: docs/style_weights.md).
    beta_text = pretty_value(f"{beta:e}")
    settings = [f"size={size}", f"steps={steps}", f"beta={beta_text}", "normalization=gatys", *overrides]
    return cached_run(name, RUNS / f"{size}px_beta{beta_text}" / name, settings)


def save_small(picture: Image.Image, path: Path, limit: int = 300_000) -> None:
    """PNG, as is if under `limit` bytes, else with a 256-colour palette (dithered)."""
    picture.save(path, optimize=True)
    if path.stat().st_size > limit:
        picture.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.FLOYDSTEINBERG).save(
            path, optimize=True
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument(
        "--beta", type=float, default=1e5, help="style weight of every run (strong, so that differences show)"
    )
    parser.add_argument("--height", type=int, default=200, help="panel height in the pictures, px")
    parser.add_argument("--only", default="", help="comma-separated picture names")
    parser.add_argument("--out", default=str(PROJECT_ROOT / "docs" / "images"))
    args = parser.parse_args()
    wanted = [name for name in args.only.split(",") if name]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, panels in figures(args.size, args.steps, args.beta).items():
        if wanted and name not in wanted:
            continue
        images, record = [], {}
        for label, source in panels:
            if isinstance(source, str):
                images.append((label, load_image(source)))
                continue
            key = (
                "default"
                if not source
                else "_".join(o.split("=")[0].split(".")[-1] + "-" + o.split("=")[-1] for o in source)
            )
            key = "".join(c if c.isalnum() or c in "-_." else "" for c in key)[:80]
            folder = run(key, source, args.size, args.steps, args.beta)
            images.append((label, load_image(folder / "final.png")))
            metrics = json.loads((folder / "metrics.json").read_text())
            record[label] = {
                "overrides": source,
                "final": metrics["final"],
                "wall_seconds": round(metrics["wall_seconds"], 1),
                **({"final_styles": metrics["final_styles"]} if "final_styles" in metrics else {}),
            }
        if name == "average":
            # What the average removed, amplified: |last - average| x 10.
            last, average = (np.asarray(image, dtype=np.float32) for _, image in images[:2])
            difference = np.clip(np.abs(last - average) * 10, 0, 255).astype(np.uint8)
            images.append(("|last - average| x 10", Image.fromarray(difference)))
        picture = side_by_side(
            [image for _, image in images], args.height, gap=6, labels=[label for label, _ in images]
        )
        path = out / f"controls_{name}.png"
        save_small(picture, path)
        if name == "scale":
            # The top-left quarter of each result, enlarged 2x (nearest): the strokes themselves.
            crops = [
                (
                    f"{label}, top-left, x2",
                    image.crop((0, 0, image.width // 2, image.height // 2)).resize(
                        image.size, Image.Resampling.NEAREST
                    ),
                )
                for label, image in images
            ]
            save_small(
                side_by_side([image for _, image in crops], args.height, gap=6, labels=[label for label, _ in crops]),
                out / "controls_scale_crops.png",
            )
        (RUNS / f"{args.size}px_beta{pretty_value(f'{args.beta:e}')}" / f"{name}.json").write_text(
            json.dumps(record, indent=2)
        )
        print(f"{path} ({path.stat().st_size // 1024} KB)", flush=True)


if __name__ == "__main__":
    main()
