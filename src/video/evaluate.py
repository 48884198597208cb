"""`python -m src.video.evaluate RUN_DIR [--flow farneback|dis]`: the warping error of a finished
video run, recomputed from its files with a flow of choice (Lai et al. 2018).

The run's own frames.csv uses the DIS flow that also drove the optimisation; Farneback's flow
(another algorithm) gives an independent check. Prints one JSON line: the mean warping error of
the stylised frames and of the content frames (the reference), over frames 1.. and reliable pixels.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from src.cli.app import configure
from src.common.errors import UserError
from src.common.images import resize
from src.video.flow import FlowSettings, grey, optical_flow, reliability, warping_error
from src.video.runner import frame_path, open_clip, stylised_array


def evaluate(run_dir: Path, flow: str = "farneback") -> dict[str, Any]:
    saved = run_dir / ".hydra" / "config.yaml"
    if not saved.is_file():
        raise UserError(f"{run_dir} is not a run folder (no .hydra/config.yaml)")
    cfg = OmegaConf.load(saved)
    assert isinstance(cfg, DictConfig)
    clip = open_clip(cfg)
    stylised_errors, content_errors = [], []
    previous: tuple[np.ndarray, np.ndarray] | None = None
    for frame in clip.frames():
        if not frame_path(run_dir, frame.index).is_file():
            break
        content = np.asarray(resize(frame.image, clip.size), dtype=np.uint8)
        current = (content, stylised_array(run_dir, frame.index))
        if previous is not None:
            backward = optical_flow(grey(content), grey(previous[0]), method=flow)
            forward = optical_flow(grey(previous[0]), grey(content), method=flow)
            mask = reliability(backward, forward, FlowSettings())
            stylised_errors.append(warping_error(current[1], previous[1], backward, mask))
            content_errors.append(warping_error(content / 255.0, previous[0] / 255.0, backward, mask))
        previous = current
    finite = [e for e in stylised_errors if math.isfinite(e)]
    return {
        "run": str(run_dir),
        "flow": flow,
        "frames": len(stylised_errors) + 1,
        "warping_error": float(np.mean(finite)) if finite else math.nan,
        "content_warping_error": float(np.nanmean(content_errors)) if content_errors else math.nan,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--flow", choices=("farneback", "dis"), default="farneback")
    args = parser.parse_args(argv)
    configure()  # the ${asset:} resolver of saved configs
    try:
        print(json.dumps(evaluate(args.run_dir, args.flow)))
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
