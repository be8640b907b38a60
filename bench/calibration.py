"""The held-out log loss of temperature scaling (``model.calibrate``) where the only held-out
photos are the validation split, as in `bench/recipes.py`: there the checkpoint's temperature was
fitted on the very photos the estimate is read from. Cross-fitted instead: the temperature is
fitted on one half of the split and scored on the other, both ways, over random halvings.

    python bench/val_split.py --data ../shared/data/dogs-vs-cats-200px/train --size 64 --out bench/out/val64
    python bench/calibration.py --images bench/out/val64 bench/out/maps_s51_cal/maps_seed*/checkpoints/last.ckpt

Prints, per checkpoint, the log loss as the network gives it (temperature 1), cross-fitted, and
with the checkpoint's own temperature (fitted on all of the split: optimistic), as JSON lines.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from catdog.data.files import find_labelled  # noqa: E402
from catdog.inference import decode_files, decoded_batches, load_model, log_probs_of  # noqa: E402
from catdog.model.calibration import fit_temperature, scaled  # noqa: E402


def cross_fitted_loss(log_p: torch.Tensor, y: torch.Tensor, halvings: int, seed: int = 0) -> tuple[float, float]:
    """The mean log loss over ``halvings`` random halvings, each half scored with the temperature
    fitted on the other; and the mean of those temperatures."""
    rng = np.random.default_rng(seed)
    losses, temperatures = [], []
    for _ in range(halvings):
        order = torch.as_tensor(rng.permutation(len(y)))
        halves = order[: len(y) // 2], order[len(y) // 2 :]
        for fit, score in (halves, halves[::-1]):
            t = fit_temperature(log_p[fit], y[fit])
            losses.append(float(F.nll_loss(scaled(log_p[score], t), y[score], reduction="sum")))
            temperatures.append(t)
    return sum(losses) / (halvings * len(y)), statistics.mean(temperatures)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--images", type=Path, required=True, help="the held-out photos as a labelled folder (bench/val_split.py)")
    parser.add_argument("--halvings", type=int, default=20)
    parser.add_argument("--cache-dir", type=Path, default=ROOT / "outputs" / "cache")
    args = parser.parse_args()

    files = find_labelled(str(args.images))
    for path in args.checkpoints:
        model = load_model(str(path))
        decoded = decode_files(files, model.image_size, args.cache_dir)
        view = model.scoring()
        log_p = log_probs_of(model.net, decoded_batches(decoded, 256), torch.device("cpu"), tta_flip=view["tta_flip"],
                             eval_zoom=view["eval_zoom"]).double()  # temperature 1: the network's own
        y = torch.as_tensor(np.asarray([model.classes.index(c) for c in files.classes])[decoded.labels])
        crossed, mean_t = cross_fitted_loss(log_p, y, args.halvings)
        print(json.dumps({
            "checkpoint": str(path), "images": len(y), "accuracy": float((log_p.argmax(1) == y).double().mean()),
            "log_loss": float(F.nll_loss(log_p, y)), "log_loss_cross_fitted": crossed, "temperature_cross_fitted": mean_t,
            "temperature": model.temperature, "log_loss_own_temperature": float(F.nll_loss(scaled(log_p, model.temperature), y)),
        }), flush=True)


if __name__ == "__main__":
    main()
