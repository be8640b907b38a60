"""Link the validation split of a training config into a folder, so that `src/eval.py` scores
exactly the images training held out: e.g. the same checkpoint with and without `tta_flip`.

    python bench/val_split.py --data ../shared/data/dogs-vs-cats-200px/train --size 64 --out /tmp/val64
    python src/eval.py ckpt_path=RUN/checkpoints/last.ckpt data.root=/tmp/val64 tta_flip=true

The split is the DataModule's own (stratified, data.split_seed), so pass the split settings the
run used (the defaults: --val-fraction 0.2 --split-seed 42).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from catdog.data.datamodule import CatDogDataModule  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--size", type=int, default=224, help="data.image_size of the run (which files decode is the same at any size)")
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--split-seed", type=int, default=42)
    parser.add_argument("--cache-dir", type=Path, default=ROOT / "outputs" / "cache")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    datamodule = CatDogDataModule(root=str(args.data), image_size=args.size, val_fraction=args.val_fraction,
                                  split_seed=args.split_seed, cache_dir=str(args.cache_dir))
    datamodule.setup()
    args.out.mkdir(parents=True, exist_ok=True)
    for i in datamodule.splits["val"]:
        path = Path(datamodule.decoded.paths[i])
        (args.out / path.name).symlink_to(path.resolve())
    print(f"{len(datamodule.splits['val'])} validation images linked into {args.out}")


if __name__ == "__main__":
    main()
