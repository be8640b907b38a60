"""Predict a folder of unlabelled images and write a Kaggle submission.

    python src/predict.py ckpt_path=last data.root=/path/to/test1
    python src/predict.py ckpt_path=... data.root=/path/to/test1 hard_labels=true   # 0/1 labels
    python src/predict.py ckpt_path=... data.root=/path/to/test1 tta_flip=true clip_eps=0.01

Writes ``submission.csv`` into the run folder (outputs/predict/<time>/; ``csv_path=`` puts it
elsewhere) and prints its path last. The format is Kaggle's for test1/ (``N.jpg``): header
``id,label``, one row per id in numeric order, ``label`` = P(dog) clipped into
[clip_eps, 1 - clip_eps] (Dogs vs. Cats Redux, scored by log loss), or 0/1 with
``hard_labels=true`` (the original competition, scored by accuracy).

Files whose name is not a number are predicted too, with their name (without suffix) as id,
after the numeric ids. Unreadable files are skipped and listed in bad_files.csv; when two
files give the same id (``1.jpg`` and ``1.png``) the first in path order is used and the
others are reported. Skipped files have no row: Kaggle wants every id of its test set.
"""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig

from catdog.allocator import apply_keep_freed_memory
from catdog.command_line import run_command_line
from catdog.resolvers import register_resolvers
from catdog.errors import UserError
from catdog.task import hydra_task

log = logging.getLogger("catdog.predict")
register_resolvers()


def submission_id(path: str) -> tuple[tuple, str]:
    """(sort key, id): ``12.jpg`` -> id 12, sorted numerically before any name that is not a number."""
    stem = Path(path).stem
    if stem.isascii() and stem.isdigit():
        return (0, int(stem), ""), str(int(stem))
    return (1, 0, stem), stem


def unique_ids(paths: list[str]) -> tuple[list[int], list[tuple[str, str]], dict[str, list[str]]]:
    """Indices of the files to keep (the first file of each id, in the order given), the
    others as (path, reason), and every id that more than one file claims with those files."""
    first: dict[str, int] = {}
    claims: dict[str, list[str]] = {}
    dropped = []
    for i, path in enumerate(paths):
        _, ident = submission_id(path)
        claims.setdefault(ident, []).append(path)
        if ident in first:
            dropped.append((path, f"duplicate id: {ident} is also {paths[first[ident]]}, which is used"))
        else:
            first[ident] = i
    return sorted(first.values()), dropped, {k: v for k, v in claims.items() if len(v) > 1}


def write_submission(path: Path, rows: list[tuple[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["id", "label"])
        writer.writerows(rows)


def predict(cfg: DictConfig) -> dict:
    from catdog.data.files import find_unlabelled
    from catdog.data.report import report_skipped
    from catdog.inference import decode_files, decoded_batches, load_model, log_probs_of, require_some, select_device
    from catdog.model.evaluation import positive_class

    eps = float(cfg.clip_eps)
    if not 0.0 <= eps < 0.5:
        raise UserError(f"clip_eps={cfg.clip_eps} must be in [0, 0.5): P(dog) is clipped into [clip_eps, 1 - clip_eps]")
    model = load_model(cfg.get("ckpt_path"), cfg.paths.output_root, cfg.data.get("image_size"))
    dog = positive_class(model.classes)
    files = find_unlabelled(cfg.data.root)
    device = select_device(cfg.get("device", "auto"))
    apply_keep_freed_memory(cfg.get("keep_freed_memory"))  # before the first batch, as train.py: 2x faster on a CPU
    view = model.scoring(cfg.get("tta_flip"), cfg.get("eval_zoom"))
    out_dir = Path(cfg.paths.output_dir)

    decoded = decode_files(files, model.image_size, cfg.data.cache_dir, cfg.data.get("num_workers"), cfg.data.max_pixels)
    keep, duplicates, claimed = unique_ids(decoded.paths)
    if claimed:
        shown = "; ".join(f"{ident}: {', '.join(Path(p).name for p in ps)}" for ident, ps in list(claimed.items())[:5])
        more = f" and {len(claimed) - 5} more" if len(claimed) > 5 else ""
        log.error("%d id(s) claimed by more than one file (%s%s): the first file of each is used, the others are in bad_files.csv",
                  len(claimed), shown, more)
    bad = decoded.bad + duplicates
    report_skipped(bad, len(files.paths), out_dir, files.ignored, note="; unreadable files have no row in the submission")
    require_some(len(decoded.paths), len(decoded.bad), cfg.data.root)
    log_probs = log_probs_of(model.net, decoded_batches(decoded, cfg.data.batch_size), device, **view).double().numpy()

    p_dog = np.exp(log_probs[keep, dog])
    predicted = log_probs[keep].argmax(axis=1)
    if cfg.hard_labels:
        labels = [str(int(c == dog)) for c in predicted]
    else:
        labels = [f"{min(max(float(p), eps), 1.0 - eps):.6g}" for p in p_dog]
    keyed = sorted((submission_id(decoded.paths[i]), label) for i, label in zip(keep, labels))
    csv_path = Path(cfg.csv_path)
    write_submission(csv_path, [(ident, label) for (_, ident), label in keyed])

    name = model.classes[dog]
    what = "0/1 labels" if cfg.hard_labels else f"P({name}) clipped to [{eps:g}, {1 - eps:g}]"
    log.info("%d rows of %s (%d predicted %s) by %s, tta_flip=%s, eval_zoom=%g", len(keyed), what,
             int((predicted == dog).sum()), name, model.path, str(view["tta_flip"]).lower(), view["eval_zoom"])
    print(csv_path, flush=True)
    return {"metrics": {"rows": len(keyed), "skipped": len(bad)}, "objective": math.nan, "csv": str(csv_path),
            "checkpoint": model.path}  # which model wrote the csv, when ckpt_path=last named none


@hydra.main(version_base="1.3", config_path="../conf", config_name="predict")
@hydra_task
def main(cfg: DictConfig) -> dict:
    return predict(cfg)


if __name__ == "__main__":
    run_command_line(main)
