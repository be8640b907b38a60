"""Compare training recipes on real photos: held-out accuracy and log loss, over seeds.

Each recipe is a list of overrides of `src/train.py`; each (recipe, seed) is one run of
train.py in its own process. Several run at once on one GPU, which small models do not fill.
The held-out estimate is the validation split (fixed by data.split_seed, never trained on)
scored at the LAST epoch, so no checkpoint was picked by looking at it. Results are written
as each run ends (JSON lines), then summarised as mean +- std per recipe.

    python bench/recipes.py --data ../shared/data/dogs-vs-cats-200px/train --parallel 6 \\
        --recipes baseline fc_bn_zoom_tta_ema --seeds 0 1 2
    python bench/recipes.py --data ... --seeds 0 --then-best-seeds 1 2   # screen, then confirm the best
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from catdog.task import read_result  # noqa: E402

# The issue's best measured recipe (85.7%): AdamW 1e-3 wd 0.05, one-cycle, BatchNorm, zoom 0.75-1, 100 epochs.
_ISSUE_BEST = ["optimizer=adamw", "scheduler=onecycle", "model.net.batch_norm=true", "model.augment.scale=[0.75,1.0]",
               "trainer.max_epochs=100"]
# experiment=cpu as measured until session 15, before the mild surroundings swap joined it, so that
# those figures stay reproducible.
_CPU_S15 = ["experiment=cpu", "model.augment.frame_swap=0"]
_CPU30 = [*_CPU_S15, "trainer.max_epochs=30"]  # experiment=cpu's length until session 14
_CPU40 = ["experiment=cpu", "trainer.max_epochs=40"]  # experiment=cpu as it is now, for the default recipe's 40 epochs
_SWAP_MILD = ["model.augment.frame_swap=0.25", "model.augment.frame_keep=[0.6,0.9]"]  # the maps issue's milder swap
_SMALL = [*_CPU_S15, "model.mixup=0.2", "trainer.max_epochs=150"]  # experiment=cpu_small as measured (session 12)
_EMA = ["+callbacks.ema._target_=lightning.pytorch.callbacks.EMAWeightAveraging", "+callbacks.ema.decay=0.998"]
RECIPES: dict[str, list[str]] = {
    "original_seed": ["experiment=seed"],
    "issue_best": _ISSUE_BEST,
    "mixup": _ISSUE_BEST + ["model.mixup=0.2"],
    "gap": _ISSUE_BEST + ["model.net.head=gap"],
    "label_smoothing": _ISSUE_BEST + ["model.label_smoothing=0.1"],
    "cutmix": _ISSUE_BEST + ["model.cutmix=1.0"],
    # EMA with a time constant of 100 steps: a tenth of a 20-epoch run on 3,200 images, as 0.998 is of 100 epochs.
    "ema_short": _ISSUE_BEST + [*_EMA[:1], "+callbacks.ema.decay=0.99"],
    "zoom50": [*_ISSUE_BEST[:-2], "model.augment.scale=[0.5,1.0]", "trainer.max_epochs=100"],
    "tta_ema": _ISSUE_BEST + ["model.tta_flip=true", *_EMA],
    "mixup_tta_ema": _ISSUE_BEST + ["model.tta_flip=true", "model.mixup=0.2", *_EMA],
    "mixcut_tta_ema": _ISSUE_BEST + ["model.tta_flip=true", "model.mixup=0.2", "model.cutmix=1.0", *_EMA],
    "gap_mixup_tta_ema": _ISSUE_BEST + ["model.net.head=gap", "model.tta_flip=true", "model.mixup=0.2", *_EMA],
    "mixup_tta_ema_160px": _ISSUE_BEST + ["data.image_size=160", "model.tta_flip=true", "model.mixup=0.2", *_EMA],
    "mixup_tta_ema_128px": _ISSUE_BEST + ["data.image_size=128", "model.tta_flip=true", "model.mixup=0.2", *_EMA],
    "mixup_tta_ema_ls": _ISSUE_BEST + ["model.tta_flip=true", "model.mixup=0.2", "model.label_smoothing=0.1", *_EMA],
    "mixup_tta_ema_zoom50": [*_ISSUE_BEST[:-2], "model.augment.scale=[0.5,1.0]", "trainer.max_epochs=100",
                             "model.tta_flip=true", "model.mixup=0.2", *_EMA],
    # Issue 13: training changes that might move the maps onto the animal (40 epochs at 64 px there).
    "zoomout": ["model.augment.scale=[0.75,1.33]"],
    "erase": ["model.augment.erase=0.5"],
    "zoomout_erase": ["model.augment.scale=[0.75,1.33]", "model.augment.erase=0.5"],
    "zoomout_mild": ["model.augment.scale=[0.75,1.15]"],  # the default zoom-in, and a little zoom-out
    "frame_swap": ["model.augment.frame_swap=0.5"],  # surroundings from another photo for half the images
    "frame_swap_mild": _SWAP_MILD,
    "frame_swap_mid": ["model.augment.frame_swap=0.5", _SWAP_MILD[1]],  # half the images, the mild box
    # A quarter of the images, each given the surroundings of an image of the other class: the
    # surroundings then say as little of the label as frame_swap's half with random donors, with
    # half the images altered (session 17).
    "frame_swap_other": ["model.augment.frame_swap=0.25", "model.augment.frame_donor=other_class"],
    # Saturation jitter down to grey (factors 0-2 instead of 0.8-1.2): less to learn from colour, which
    # the Oxford sample's ruddy short-haired cats share with many dogs (session 18).
    "saturation_full": ["model.augment.saturation=1.0"],
    # experiment=cpu's warmed-up EMA of the weights, at the time constant it has there (2 epochs: 100
    # steps of 3,200 photos), validated and mapped: do smoother weights give maps on the animal (session 21)?
    "ema_2ep": ["+callbacks.ema._target_=lightning.pytorch.callbacks.WeightAveraging",
                "+callbacks.ema.avg_fn._target_=catdog.model.ema.warmed_up_ema", "+callbacks.ema.avg_fn.decay=0.99"],
    # Twice the conv widths with the strong swap: the swap's maps at the default's accuracy, if the
    # extra capacity buys back on the animal what the swap takes from the surroundings (session 21)?
    "wide_swap": ["model.net.channels=[64,128,256]", "model.augment.frame_swap=0.5"],
    "wide": ["model.net.channels=[64,128,256]"],  # the width alone: does it cost Kaggle accuracy at 3,200 photos (session 22)?
    "res96": ["data.image_size=96"],  # more pixels per animal (pass no other data.image_size after it)
    # The maps issue's model (64 px, 40 epochs) with global average pooling before the classifier instead of
    # flatten -> fc1: class evidence the same wherever it is, as in CAM (Zhou et al., 2016).
    "gap_64px_40": ["model.net.head=gap", "data.image_size=64", "trainer.max_epochs=40"],
    # Issue 14: experiment=cpu's first form (80 px, 30 epochs, MixUp 0.2, EMA, flip TTA) and variants of
    # it at about the same cost on 20,000 photos: resolution against epochs. MixUp is explicit in those
    # measured with it, since conf/experiment/cpu.yaml dropped it (session 10), and so are its first 30
    # epochs, since it went to 50 (session 14).
    "cpu_80px": [*_CPU30, "model.mixup=0.2"],
    "cpu_64px": [*_CPU_S15, "model.mixup=0.2", "data.image_size=64", "trainer.max_epochs=50"],
    "cpu_96px": [*_CPU_S15, "model.mixup=0.2", "data.image_size=96", "trainer.max_epochs=20"],
    # The default recipe does not over-fit 16,000 photos (training and held-out accuracy within a point
    # without MixUp, bench/RESULTS.md): less regularisation, or more pixels for the rest of the two-hour
    # budget (about 1.45x cpu_80px's cost).
    "cpu_nomix": [*_CPU30, "model.mixup=0"],  # experiment=cpu from session 10 to 13
    "cpu_96px_30": [*_CPU30, "model.mixup=0.2", "data.image_size=96"],
    "cpu_50": [*_CPU_S15, "model.mixup=0", "trainer.max_epochs=50"],  # experiment=cpu in sessions 14-15
    # The maps issue's milder surroundings swap inside it (free at 64 px on 3,200 photos; session 13):
    # experiment=cpu since session 16.
    "cpu_50_swap_mild": [*_CPU_S15, "model.mixup=0", "trainer.max_epochs=50", *_SWAP_MILD],
    # experiment=cpu at 30 epochs under-fits: 91.6% training accuracy at its last epoch against 91.9% held out (seed 2).
    # Twice the conv blocks' widths: about 2.2x its time on the Zen 4.
    "cpu_wide": [*_CPU30, "model.net.channels=[64,128,256]"],
    # The 4,000-photo sample (3,200 trained on): 30 epochs there are 1,500 steps, a fifth of the 20,000
    # photos' 7,500; the same number of steps is 150 epochs.
    "cpu_100": [*_CPU_S15, "model.mixup=0", "trainer.max_epochs=100"],
    "cpu_150": [*_CPU_S15, "model.mixup=0", "trainer.max_epochs=150"],
    "cpu_150_mixup": _SMALL,
    "cpu_150_mixup_swap_mild": [*_SMALL, *_SWAP_MILD],
    # Issue 14 at 224 px on a GPU (session 25): experiment=cpu's training (EMA, flip TTA, the centre
    # view, the mild swap) for the default's 40 epochs, and larger max-pools, which widen what the three
    # blocks see (conv3's window: 22 px with the original's 2x2, 54 px with 2, 4, 4, 74 px with 4, 4, 2).
    "cpu_40": _CPU40,
    "pool244": ["model.net.pool=[2,4,4]"],
    "pool442": ["model.net.pool=[4,4,2]"],
    "pool244_swap_mild": ["model.net.pool=[2,4,4]", *_SWAP_MILD],  # the default's pools with the mild swap (session 30)
    # The default's pools leave 2 points of Kaggle accuracy above the maps issue's 82.9%: spend them on surroundings
    # that say less of the label (session 34): other-class donors for a quarter (as uninformative as random
    # donors for half), and for half (surroundings that say nothing of the label).
    "pool244_swap_other": ["model.net.pool=[2,4,4]", "model.augment.frame_swap=0.25", "model.augment.frame_donor=other_class"],
    "pool244_swap_other_half": ["model.net.pool=[2,4,4]", "model.augment.frame_swap=0.5",
                                "model.augment.frame_donor=other_class"],
    "cpu_40_pool244": [*_CPU40, "model.net.pool=[2,4,4]"],
    "cpu_40_pool442": [*_CPU40, "model.net.pool=[4,4,2]"],
    "cpu_40_pool244_wide": [*_CPU40, "model.net.pool=[2,4,4]", "model.net.channels=[64,128,256]"],
    # experiment=cpu with the default's pools at 96 px, the multiple of 32 nearest 80: about the conv work
    # of 80 px with the original pools, conv3 seeing 54 px of 96 instead of 22 of 80 (session 26).
    "cpu_pool244_96px": ["experiment=cpu", "data.image_size=96", "model.net.pool=[2,4,4]"],
    # The small-data recipe (cpu_150_mixup) in experiment=cpu's shape since session 27: 96 px, pools 2, 4, 4 (session 28).
    "cpu_small_96px": [*_SMALL, "data.image_size=96", "model.net.pool=[2,4,4]"],
    "previous_defaults": ["optimizer=adam", "scheduler=cosine", "model.net.batch_norm=false",
                          "model.augment.scale=[1.0,1.0]", "trainer.max_epochs=20"],  # before issue 7's screen
    "pool222": [],  # the default recipe as it was until session 26: the original pools (pinned below)
    "defaults": [],  # whatever conf/ says now
}
# Every recipe above was measured while conf/ had the original pools, [2, 2, 2] (the default became
# [2, 4, 4] in session 26), those with experiment=cpu while it was 80 px (96 px since session 27), and
# the others without the surroundings swap (the default's since session 30).
# Pinned first, so a recipe's own size and pools win, to keep their figures reproducible.


def _as_measured(overrides: list[str]) -> list[str]:
    size = ["data.image_size=80"] if "experiment=cpu" in overrides else []
    # Without the mild surroundings swap, the default's since session 30 (an experiment sets its own).
    swap = [] if any(o.startswith("experiment=") for o in overrides) else ["model.augment.frame_swap=0",
                                                                          "model.augment.frame_keep=[0.5,0.8]"]
    return ["model.net.pool=[2,2,2]", *size, *swap, *overrides]


RECIPES = {name: overrides if name == "defaults" else _as_measured(overrides) for name, overrides in RECIPES.items()}
# The default recipe as conf/ has it (the surroundings swap included) with pools 4, 4, 2: does the default
# reach experiment=cpu's 94.5% at 224 px with them (session 32)?
RECIPES["defaults_pool442"] = ["model.net.pool=[4,4,2]"]
# The default recipe with a penalty on the input gradient that falls on the swapped-in surroundings
# (model.surroundings_penalty, catdog/model/surroundings_penalty.py; sessions 34-36).
RECIPES["surroundings_penalty"] = ["model.surroundings_penalty=1.0"]
RECIPES["surroundings_penalty_03"] = ["model.surroundings_penalty=0.3"]
RECIPES["surroundings_penalty_3"] = ["model.surroundings_penalty=3.0"]
RECIPES["surroundings_penalty_half"] = ["model.surroundings_penalty=1.0", "model.augment.frame_swap=0.5"]  # twice the images penalised
RECIPES["surroundings_penalty_2"] = ["model.surroundings_penalty=2.0"]
RECIPES["surroundings_penalty_15"] = ["model.surroundings_penalty=1.5"]
# Other-class donors: surroundings that contradict the label, on top of the penalty on them
RECIPES["surroundings_penalty_other"] = ["model.surroundings_penalty=1.0", "model.augment.frame_donor=other_class"]
# A smaller kept box, so more of each swapped image's surroundings is penalised (session 37)
RECIPES["surroundings_penalty_keep58"] = ["model.surroundings_penalty=1.0", "model.augment.frame_keep=[0.5,0.8]"]
# experiment=cpu (16,000 photos, 96 px) with the penalty: do more photos and the penalty together reach the maps
# issue's 0.70 / 95% (session 38)?
RECIPES["cpu_penalty"] = ["experiment=cpu", "model.surroundings_penalty=1.0"]
RECIPES["cpu_penalty_01"] = ["experiment=cpu", "model.surroundings_penalty=0.1"]  # weight 1.0 cost 9 points there
RECIPES["cpu_penalty_003"] = ["experiment=cpu", "model.surroundings_penalty=0.03"]  # 0.1 cost 2.2 points (session 39)
# The penalty over batches of 16: four times the steps at the maps issue's 64 px and 40 epochs (session 45);
# surroundings_penalty with data.image_size=64 trainer.max_epochs=40 data.batch_size=16 as measured.
# experiment=maps as measured in sessions 48-50, with the default's rotations, uncalibrated, HiResCAM pool1 in
# TensorBoard (the preset drops the rotations and calibrates since session 51); and in sessions 45-47, with the
# zoom-ins too.
RECIPES["maps_rot10"] = ["experiment=maps", "model.augment.degrees=10", "model.calibrate=false",
                         "callbacks.gradcam.method=hirescam", "callbacks.gradcam.layer=pool1"]
RECIPES["maps_zoom"] = [*RECIPES["maps_rot10"], "model.augment.scale=[0.75,1.0]"]
RECIPES["maps"] = ["experiment=maps"]
# The kept box anywhere it fits instead of centred: borrowed surroundings beside the animal too (session 52)
RECIPES["maps_shift"] = ["experiment=maps", "model.augment.frame_shift=1.0"]
# Half the dropout before the classifier: more of it (0.8) put the default's maxima off the animal (session 42)
RECIPES["maps_drop25"] = ["experiment=maps", "model.net.dropout=0.25"]
# No colour jitter: the last geometric augmentations dropped brought training closer to the photos scored (session 52)
RECIPES["maps_nojitter"] = ["experiment=maps", "model.augment.brightness=0", "model.augment.contrast=0",
                            "model.augment.saturation=0"]


def run_one(name: str, seed: int, data: Path, out: Path, cache_dir: Path, extra: list[str],
            overrides: list[str] | None = None, reuse: bool = False) -> dict:
    """One train.py run of the recipe ``name`` (or of ``overrides`` under that name), a JSON line in recipes.jsonl.
    With ``reuse``, a run ``out`` already holds with the same command line is read instead of trained again."""
    overrides = RECIPES[name] if overrides is None else overrides
    run_dir = out / f"{name}_seed{seed}"
    args = [*overrides, f"data.root={data}", f"seed={seed}", f"data.cache_dir={cache_dir}", f"hydra.run.dir={run_dir}",
            f"paths.output_root={out}", "trainer.enable_progress_bar=false", "callbacks.gradcam.every_n_epochs=10", *extra]
    row = {"recipe": name, "seed": seed, "overrides": overrides}
    result = _finished_with(run_dir, args) if reuse else None
    if result is not None:
        row.update(wall_s=round(result["run_time_s"], 1), reused=True)
    else:
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, str(ROOT / "src" / "train.py"), *args], capture_output=True, text=True)
        row["wall_s"] = round(time.perf_counter() - start, 1)
        result = read_result(run_dir) if proc.returncode == 0 else None
        if result is None:
            row["error"] = proc.stderr[-1500:]
    if result is not None:
        metrics = result["metrics"]
        row.update({k: metrics.get(k) for k in ("val/acc", "val/loss", "val/acc_best", "val/auroc")})
    with open(out / "recipes.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps({k: v for k, v in row.items() if k != "overrides"}), flush=True)
    return row


def _finished_with(run_dir: Path, args: list[str]) -> dict | None:
    """The result.json of a run in ``run_dir`` that ended well with exactly these overrides, else None."""
    result = read_result(run_dir)
    if result is None or result.get("status") != "ok":
        return None
    try:  # Hydra keeps the task's overrides there, not its own (hydra.run.dir: the folder itself)
        same = list(OmegaConf.load(run_dir / ".hydra" / "overrides.yaml")) == [a for a in args if not a.startswith("hydra.")]
    except OSError:
        return None
    return result if same else None


def summarise(rows: list[dict]) -> list[dict]:
    table = []
    for name in dict.fromkeys(r["recipe"] for r in rows):
        ok = [r for r in rows if r["recipe"] == name and r.get("val/acc") is not None]
        if not ok:
            continue
        acc = [r["val/acc"] for r in ok]
        loss = [r["val/loss"] for r in ok]
        table.append({"recipe": name, "runs": len(ok), "acc_mean": statistics.mean(acc),
                      "acc_std": statistics.stdev(acc) if len(acc) > 1 else 0.0,
                      "loss_mean": statistics.mean(loss), "loss_std": statistics.stdev(loss) if len(loss) > 1 else 0.0,
                      "seeds": [r["seed"] for r in ok], "accs": acc})
    return sorted(table, key=lambda t: -t["acc_mean"])


def print_table(table: list[dict]) -> None:
    print("\n| recipe | runs | held-out accuracy | log loss |\n|---|---|---|---|")
    for t in table:
        print(f"| {t['recipe']} | {t['runs']} | {100 * t['acc_mean']:.1f}% +- {100 * t['acc_std']:.1f} "
              f"| {t['loss_mean']:.3f} +- {t['loss_std']:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "recipes")
    parser.add_argument("--recipes", nargs="*", default=list(RECIPES))
    parser.add_argument("--jobs", nargs="*", default=[], help="explicit recipe:seed pairs, instead of recipes x seeds")
    parser.add_argument("--seeds", nargs="*", type=int, default=[0])
    parser.add_argument("--then-best-seeds", nargs="*", type=int, default=[])
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("--budget-s", type=float, default=float("inf"), help="start no run after this many seconds")
    parser.add_argument("overrides", nargs="*", help="added to every run, e.g. trainer.max_epochs=2")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    cache_dir = args.out / "cache"
    deadline = time.perf_counter() + args.budget_s

    def launch(jobs: list[tuple[str, int]]) -> list[dict]:
        def guarded(job):
            if time.perf_counter() > deadline:
                return {"recipe": job[0], "seed": job[1], "error": "not started: time budget spent"}
            return run_one(*job, args.data, args.out, cache_dir, args.overrides)

        with ThreadPoolExecutor(args.parallel) as pool:
            return list(pool.map(guarded, jobs))

    jobs = [(j.split(":")[0], int(j.split(":")[1])) for j in args.jobs] or [(r, s) for s in args.seeds for r in args.recipes]
    rows = launch(jobs)
    table = summarise(rows)
    if args.then_best_seeds and table:
        best = table[0]["recipe"]
        print(f"\nbest after screening: {best}; running seeds {args.then_best_seeds}", flush=True)
        rows += launch([(best, s) for s in args.then_best_seeds])
        table = summarise(rows)
    (args.out / "recipes_summary.json").write_text(json.dumps(table, indent=2))
    print_table(table)


if __name__ == "__main__":
    main()
