"""Test a checkpoint on a labelled folder: accuracy, F1, AUROC, log loss, confusion matrix.

    python src/eval.py ckpt_path=outputs/runs/.../checkpoints/epoch_012.ckpt data.root=/path/to/labelled
    python src/eval.py ckpt_path=last data.root=/path/to/labelled tta_flip=true eval_zoom=0.875

Every image of the folder is evaluated (no split), in either layout (Kaggle's cat.N.jpg /
dog.N.jpg, or cat/ and dog/ sub-folders), at the checkpoint's image size. Unreadable files
are skipped and listed in bad_files.csv. Prints a small table and writes metrics.json,
confusion_matrix.csv, confusion_matrix.png and predictions.csv into the run folder
(outputs/eval/<time>/).
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig

from catdog.allocator import apply_keep_freed_memory
from catdog.command_line import run_command_line
from catdog.resolvers import register_resolvers
from catdog.errors import UserError
from catdog.task import hydra_task

log = logging.getLogger("catdog.eval")
register_resolvers()


def table(metrics: dict, classes: list[str], header: list[tuple[str, str]]) -> str:
    """The metrics and the confusion matrix as a few aligned lines of text."""
    lines = [f"{k:<12}{v}" for k, v in header]
    names = {"test/acc": "accuracy", "test/f1": "F1 (macro)", "test/auroc": "AUROC", "test/loss": "log loss"}
    lines += [f"{label:<12}{metrics[key]:.4f}" for key, label in names.items()]
    width = max(6, *(len(c) + 2 for c in classes))
    lines.append("confusion matrix (rows: true class, columns: predicted)")
    lines.append(" " * 12 + "".join(f"{c:>{width}}" for c in classes))
    for name, row in zip(classes, metrics["confusion_matrix"]):
        lines.append(f"  {name:<10}" + "".join(f"{int(n):>{width}}" for n in row))
    return "\n".join(lines)


def evaluate(cfg: DictConfig) -> dict:
    from catdog.callbacks.confusion_matrix import confusion_matrix_image
    from catdog.data.files import find_labelled
    from catdog.data.report import report_skipped
    from catdog.gradcam.render import save_picture
    from catdog.inference import decode_files, decoded_batches, load_model, log_probs_of, require_some, select_device
    from catdog.model.evaluation import classification_metrics

    model = load_model(cfg.get("ckpt_path"), cfg.paths.output_root, cfg.data.get("image_size"))
    files = find_labelled(cfg.data.root)
    unknown = [c for c in files.classes if c not in model.classes]
    if unknown:
        raise UserError(f"{cfg.data.root} has classes {', '.join(unknown)} that the checkpoint does not know "
                        f"(it was trained on {', '.join(model.classes)})")
    device = select_device(cfg.get("device", "auto"))
    apply_keep_freed_memory(cfg.get("keep_freed_memory"))  # before the first batch, as train.py: 2x faster on a CPU
    view = model.scoring(cfg.get("tta_flip"), cfg.get("eval_zoom"))
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    decoded = decode_files(files, model.image_size, cfg.data.cache_dir, cfg.data.get("num_workers"), cfg.data.max_pixels)
    report_skipped(decoded.bad, len(files.paths), out_dir, files.ignored)
    require_some(len(decoded.paths), len(decoded.bad), cfg.data.root)
    log_probs = log_probs_of(model.net, decoded_batches(decoded, cfg.data.batch_size), device, **view)
    targets = np.asarray([model.classes.index(c) for c in files.classes])[decoded.labels]
    metrics = classification_metrics(log_probs, targets, len(model.classes))

    info = {"checkpoint": model.path, "data_root": str(cfg.data.root), "layout": files.layout,
            "image_size": model.image_size, **view, "device": str(device), "classes": model.classes,
            "images": len(decoded.paths), "skipped": len(decoded.bad)}
    (out_dir / "metrics.json").write_text(json.dumps({**metrics, **info}, indent=2))
    matrix = np.asarray(metrics["confusion_matrix"])
    with open(out_dir / "confusion_matrix.csv", "w", newline="") as f:
        csv.writer(f).writerows([["true \\ predicted", *model.classes],
                                 *([c, *map(int, row)] for c, row in zip(model.classes, matrix))])
    save_picture(confusion_matrix_image(matrix, model.classes, f"accuracy {metrics['test/acc']:.3f}"), out_dir / "confusion_matrix.png")
    probs = log_probs.double().exp().numpy()
    with open(out_dir / "predictions.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "predicted", *(f"p_{c}" for c in model.classes)])
        for path, t, p in zip(decoded.paths, targets, probs):
            writer.writerow([path, model.classes[t], model.classes[int(p.argmax())], *(f"{v:.6f}" for v in p)])

    header = [("checkpoint", model.path), ("data", f"{cfg.data.root} ({files.layout}, {len(decoded.paths)} images"
              f"{f', {len(decoded.bad)} skipped' if decoded.bad else ''})"),
              ("settings", f"{model.image_size} px, tta_flip={str(view['tta_flip']).lower()}, eval_zoom={view['eval_zoom']:g}, {device}")]
    print(table(metrics, model.classes, header), flush=True)
    log.info("accuracy %.4f, log loss %.4f: %s", metrics["test/acc"], metrics["test/loss"], out_dir / "metrics.json")
    scalars = {k: v for k, v in metrics.items() if k.startswith("test/")}
    return {"metrics": scalars, "objective": scalars["test/acc"], "metrics_json": str(out_dir / "metrics.json")}


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
@hydra_task
def main(cfg: DictConfig) -> dict:
    return evaluate(cfg)


if __name__ == "__main__":
    run_command_line(main)
