"""What more photos buy: held-out accuracy and log loss against the number of training photos,
and with ``--probe`` (an Oxford-IIIT Pet folder) where the maps fall on real photos.

Every run trains on ``data.train_limit`` photos of the same training split (smaller sets lie
inside larger ones) and is scored on the same validation split (``data.split_seed``), at its
last epoch, so the points differ only by the photos added. One setting for all points: the
overrides after ``--``. Runs go through bench/recipes.py's runner (one train.py process each,
logged to recipes.jsonl); the largest start first, so parallel workers finish together.

    OMP_NUM_THREADS=1 python bench/learning_curve.py --data ../shared/data/dogs-vs-cats-200px/train-20k \\
        --sizes 2000 4000 8000 16000 --seeds 0 --parallel 2 -- data.image_size=64 trainer.max_epochs=20 trainer=cpu
    ... --probe ../shared/data/oxford-pets-sample   # and each last.ckpt's maps scored by src/map_report.py

Writes learning_curve.md (the table) and learning_curve.png (the picture) in --out. A run that --out
already holds with the same settings (a curve interrupted, or given more seeds or sizes) is read, not
trained again.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from recipes import ROOT, run_one, summarise  # noqa: E402


MAP_SCORES = ("energy_on_animal", "max_on_animal")  # the maps issue's two targets
_REPORT = OmegaConf.load(ROOT / "conf" / "map_report.yaml")
METHOD, LAYER = _REPORT.methods[0], _REPORT.layers[0]  # map_report's first method x layer: the callback's default


def map_scores(run_dir: Path, probe: Path) -> dict:
    """The run's last.ckpt scored on the probe by src/map_report.py, as a user would: the callback's map
    (``map_<score>``) and the centred Gaussian's (``centre_<score>``); {} with the error logged when it fails."""
    out = run_dir / "map_report"
    proc = subprocess.run([sys.executable, str(ROOT / "src" / "map_report.py"),
                           f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}", f"probe={probe}",
                           f"methods=[{METHOD}]", f"layers=[{LAYER}]", "grid_images=0", f"hydra.run.dir={out}"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"map_report failed for {run_dir}: {proc.stderr[-800:]}", file=sys.stderr, flush=True)
        return {}
    rows = {r["method"]: r for r in csv.DictReader((out / "map_report.csv").read_text().splitlines())}
    return {f"{name}_{score}": float(rows[row][score]) for name, row in (("map", METHOD), ("centre", "centre"))
            for score in MAP_SCORES}


def curve(rows: list[dict]) -> list[dict]:
    """recipes.summarise's mean and spread over seeds, per training-set size, smallest first, with
    the maps' scores' means where the runs have them."""
    sizes = {r["recipe"]: r["size"] for r in rows}
    points = sorted(({**t, "size": sizes[t["recipe"]]} for t in summarise(rows)), key=lambda t: t["size"])
    for p in points:
        scored = [r for r in rows if r["recipe"] == p["recipe"] and r.get("val/acc") is not None and "map_max_on_animal" in r]
        for key in (f"{name}_{score}" for name in ("map", "centre") for score in MAP_SCORES):
            values = [r[key] for r in scored]
            p[key] = statistics.mean(values) if values else None
            p[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    return points


def table(points: list[dict], setting: list[str]) -> str:
    maps = any(p["map_max_on_animal"] is not None for p in points)
    lines = [f"Setting: `{' '.join(setting) or '(the defaults)'}`", ""]
    if maps:
        lines += [f"Maps: {METHOD} {LAYER} of the predicted class on the probe's photos (src/map_report.py); the centred "
                  f"Gaussian's scores for reference.", ""]
    extra = " | map's mass on the animal | its maximum on the animal" if maps else ""
    lines += [f"| training photos | runs | held-out accuracy | log loss{extra} |", "|---|---|---|---|" + "---|---|" * maps]

    def cells(p: dict) -> str:
        if p["map_max_on_animal"] is None:
            return " | - | -" if maps else ""
        return (f" | {p['map_energy_on_animal']:.3f} +- {p['map_energy_on_animal_std']:.3f}"
                f" | {100 * p['map_max_on_animal']:.1f}% +- {100 * p['map_max_on_animal_std']:.1f}")

    lines += [f"| {p['size']:,} | {p['runs']} | {100 * p['acc_mean']:.1f}% +- {100 * p['acc_std']:.1f} "
              f"| {p['loss_mean']:.3f} +- {p['loss_std']:.3f}{cells(p)} |" for p in points]
    centre = next((p for p in points if p["centre_max_on_animal"] is not None), None)
    if centre:
        lines += ["", f"Centred Gaussian: mass {centre['centre_energy_on_animal']:.3f}, maximum on the animal "
                      f"{100 * centre['centre_max_on_animal']:.1f}%."]
    return "\n".join(lines) + "\n"


def plot(points: list[dict], setting: list[str], path: Path) -> None:
    sizes = [p["size"] for p in points]
    mapped = [p for p in points if p["map_max_on_animal"] is not None]
    fig, axes = plt.subplots(1, 3 if mapped else 2, figsize=(13.5 if mapped else 9, 3.8))
    acc_ax, loss_ax = axes[:2]
    acc_ax.errorbar(sizes, [100 * p["acc_mean"] for p in points], yerr=[100 * p["acc_std"] for p in points], marker="o", capsize=3)
    loss_ax.errorbar(sizes, [p["loss_mean"] for p in points], yerr=[p["loss_std"] for p in points], marker="o", capsize=3,
                     color="tab:red")
    labelled = [(acc_ax, "held-out accuracy (%)"), (loss_ax, "held-out log loss")]
    if mapped:
        labelled.append((_plot_maps(axes[2], mapped), f"{METHOD} {LAYER}: share on the probe's animals"))
    for ax, label in labelled:
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


def _plot_maps(ax, points: list[dict]):
    """The maps' mass on the animal and how often their maximum is there, each beside the centred
    Gaussian's as a dashed line: the bar a map has to clear."""
    sizes = [p["size"] for p in points]
    for score, label, colour in (("energy_on_animal", "map's mass on the animal", "tab:green"),
                                 ("max_on_animal", "maps with their maximum on the animal", "tab:purple")):
        ax.errorbar(sizes, [p[f"map_{score}"] for p in points], yerr=[p[f"map_{score}_std"] for p in points],
                    marker="o", capsize=3, color=colour, label=label)
        ax.axhline(points[0][f"centre_{score}"], color=colour, linestyle="--", linewidth=1,
                   label="dashed: the centred Gaussian's" if score == MAP_SCORES[0] else None)
    ax.legend(fontsize=7)
    return ax


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "learning_curve")
    parser.add_argument("--sizes", nargs="+", type=int, required=True, help="training photos per point")
    parser.add_argument("--seeds", nargs="*", type=int, default=[0])
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("--probe", type=Path, help="an Oxford-IIIT Pet folder: score each run's maps on it (src/map_report.py)")
    parser.add_argument("overrides", nargs="*", help="the one setting of every run, e.g. data.image_size=64")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    def one(job: tuple[int, int]) -> dict:
        size, seed = job
        name = f"n{size}"
        row = run_one(name, seed, args.data, args.out, args.out / "cache", args.overrides,
                      overrides=[f"data.train_limit={size}"], reuse=True)  # an interrupted curve continues
        if args.probe and "error" not in row:
            row.update(map_scores(args.out / f"{name}_seed{seed}", args.probe))
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
