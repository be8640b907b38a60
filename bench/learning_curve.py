"""What more photos buy: held-out accuracy and log loss against the number of training photos.

Every run trains on ``data.train_limit`` photos of the same training split (smaller sets lie
inside larger ones) and is scored on the same validation split (``data.split_seed``), at its
last epoch, so the points differ only by the photos added. One setting for all points: the
overrides after ``--``. Runs go through bench/recipes.py's runner (one train.py process each,
logged to recipes.jsonl); the largest start first, so parallel workers finish together.

    OMP_NUM_THREADS=1 python bench/learning_curve.py --data ../shared/data/dogs-vs-cats-200px/train-20k \\
        --sizes 2000 4000 8000 16000 --seeds 0 --parallel 2 -- data.image_size=64 trainer.max_epochs=20 trainer=cpu

Writes learning_curve.md (the table) and learning_curve.png (the picture) in --out.
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from recipes import ROOT, run_one, summarise  # noqa: E402


def curve(rows: list[dict]) -> list[dict]:
    """recipes.summarise's mean and spread over seeds, per training-set size, smallest first."""
    sizes = {r["recipe"]: r["size"] for r in rows}
    return sorted(({**t, "size": sizes[t["recipe"]]} for t in summarise(rows)), key=lambda t: t["size"])


def table(points: list[dict], setting: list[str]) -> str:
    lines = [f"Setting: `{' '.join(setting) or '(the defaults)'}`", "",
             "| training photos | runs | held-out accuracy | log loss |", "|---|---|---|---|"]
    lines += [f"| {p['size']:,} | {p['runs']} | {100 * p['acc_mean']:.1f}% +- {100 * p['acc_std']:.1f} "
              f"| {p['loss_mean']:.3f} +- {p['loss_std']:.3f} |" for p in points]
    return "\n".join(lines) + "\n"


def plot(points: list[dict], setting: list[str], path: Path) -> None:
    sizes = [p["size"] for p in points]
    fig, (acc_ax, loss_ax) = plt.subplots(1, 2, figsize=(9, 3.8))
    acc_ax.errorbar(sizes, [100 * p["acc_mean"] for p in points], yerr=[100 * p["acc_std"] for p in points], marker="o", capsize=3)
    loss_ax.errorbar(sizes, [p["loss_mean"] for p in points], yerr=[p["loss_std"] for p in points], marker="o", capsize=3,
                     color="tab:red")
    for ax, label in ((acc_ax, "held-out accuracy (%)"), (loss_ax, "held-out log loss")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(sizes, [f"{s:,}" for s in sizes])
        ax.minorticks_off()
        ax.set_xlabel("training photos")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    fig.suptitle("What more photos buy, every point scored on the same held-out photos\n"
                 + (" ".join(setting) or "the default recipe"), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "learning_curve")
    parser.add_argument("--sizes", nargs="+", type=int, required=True, help="training photos per point")
    parser.add_argument("--seeds", nargs="*", type=int, default=[0])
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("overrides", nargs="*", help="the one setting of every run, e.g. data.image_size=64")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    def one(job: tuple[int, int]) -> dict:
        size, seed = job
        row = run_one(f"n{size}", seed, args.data, args.out, args.out / "cache", args.overrides,
                      overrides=[f"data.train_limit={size}"])
        return {**row, "size": size}

    jobs = sorted(((size, seed) for size in args.sizes for seed in args.seeds), reverse=True)
    with ThreadPoolExecutor(args.parallel) as pool:
        rows = list(pool.map(one, jobs))
    points = curve(rows)
    if not points:
        sys.exit("no run finished: see the errors in recipes.jsonl")
    markdown = table(points, args.overrides)
    (args.out / "learning_curve.md").write_text(markdown)
    plot(points, args.overrides, args.out / "learning_curve.png")
    print("\n" + markdown + f"\nwritten: {args.out / 'learning_curve.md'}, {args.out / 'learning_curve.png'}")


if __name__ == "__main__":
    main()
