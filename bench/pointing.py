"""Which layer and CAM method point at the object: pointing game and energy-in-box of a
checkpoint on data with boxes (the built-in set), per layer and method.

    python bench/pointing.py --ckpt outputs/runs/<run>/checkpoints/epoch_019.ckpt \\
        --data outputs/data/synthetic-96px --image-size 64 --layers conv3 relu3 relu2
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from catdog.data.datamodule import CatDogDataModule  # noqa: E402
from catdog.gradcam.maps import METHODS, grad_cam_with_logits  # noqa: E402
from catdog.gradcam.scoring import energy_in_box, pointing_game  # noqa: E402
from catdog.inference import load_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--data", required=True, help="a labelled folder with boxes.csv")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--images", type=int, default=256, help="validation images scored")
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--test-fraction", type=float, default=0.1, help="as experiment=demo: the same validation split")
    parser.add_argument("--layers", nargs="*", default=["conv3", "relu3"])
    parser.add_argument("--methods", nargs="*", default=list(METHODS))
    parser.add_argument("--cache-dir", default=str(ROOT / "outputs" / "cache"))
    args = parser.parse_args()

    net = load_model(args.ckpt).net  # as the commands run it: channels-last
    dm = CatDogDataModule(root=args.data, image_size=args.image_size, cache_dir=args.cache_dir,
                          val_fraction=args.val_fraction, test_fraction=args.test_fraction)
    dm.prepare_data()
    dm.setup("fit")
    sample = dm.sample_images(args.images)
    if sample["boxes"] is None:
        raise SystemExit(f"{args.data} has no boxes.csv: nothing to score against")
    x, labels, boxes = sample["images"], sample["labels"], sample["boxes"]  # uint8: the network normalises
    print("| layer | method | accuracy | pointing game | (no tolerance) | cats | dogs | energy in box |")
    print("|---|---|---|---|---|---|---|---|")
    for layer in args.layers:
        for method in args.methods:
            cams, logits = grad_cam_with_logits(net, x, layer, None, method)
            hit = pointing_game(cams, boxes).float()
            print(f"| {layer} | {method} | {(logits.argmax(1) == labels).float().mean():.3f} | {hit.mean():.3f} "
                  f"| {pointing_game(cams, boxes, tolerance=0.0).float().mean():.3f} | {hit[labels == 0].mean():.3f} "
                  f"| {hit[labels == 1].mean():.3f} | {energy_in_box(cams, boxes).mean():.3f} |")


if __name__ == "__main__":
    main()
