"""Grad-CAM pictures of what a checkpoint's network looks at, for any images.

    python src/cam.py ckpt_path=last images=/path/to/photo.jpg
    python src/cam.py ckpt_path=... images=/path/to/folder method=gradcam++ layer=conv2 save_maps=true
    python src/cam.py ckpt_path=... images=/path/to/folder target=cat   # the evidence for "cat"
    python src/cam.py ckpt_path=... images=/path/to/folder target=dog contrast=true   # logit(dog) - logit(cat)

For each image, ``<name>.png`` in the run folder (outputs/cam/<time>/): the image as the
network sees it, the heatmap and the overlay, titled with the prediction and P(dog); with
``save_maps=true`` also ``<name>.npy``, the map as float32 (image_size, image_size) in [0, 1].
``predictions.csv`` lists every image with its prediction. Unreadable files are skipped and
listed in bad_files.csv, as in training.
"""

from __future__ import annotations

import csv
import logging
import math
from collections import Counter
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig

from catdog.allocator import apply_keep_freed_memory
from catdog.command_line import run_command_line
from catdog.resolvers import register_resolvers
from catdog.errors import UserError
from catdog.task import hydra_task

log = logging.getLogger("catdog.cam")
register_resolvers()

TITLE_CHARS = 60  # what fits above a 3 x 128 px row in the default font


def output_names(paths: list[str], root: str | Path) -> list[str]:
    """A file name (without suffix) for each image: its path below ``root`` with ``/`` as ``__``;
    names that would clash (``1.jpg`` and ``1.png``) keep their suffix as ``1_jpg``."""
    root = Path(root).expanduser()
    rel = [Path(p).relative_to(root) if root.is_dir() else Path(Path(p).name) for p in paths]
    bases = ["__".join(r.with_suffix("").parts) for r in rel]
    counts = Counter(bases)
    return [b if counts[b] == 1 else f"{b}_{r.suffix.lstrip('.').lower()}" for b, r in zip(bases, rel)]


def _target_index(target, classes: list[str]) -> int | None:
    if target is None or str(target) == "":
        return None
    if str(target) in classes:
        return classes.index(str(target))
    if isinstance(target, int) and 0 <= target < len(classes):
        return target
    raise UserError(f"target={target} is not one of the checkpoint's classes ({', '.join(classes)}); null maps the predicted class")


def make_cams(cfg: DictConfig) -> dict:
    from catdog.data.files import find_unlabelled
    from catdog.data.report import report_skipped
    from catdog.gradcam.maps import find_layers, weight_fn
    from catdog.gradcam.render import Row, cam_grid, palette, save_picture
    from catdog.inference import decode_files, decoded_batches, load_model, require_some, run_network, select_device
    from catdog.model.evaluation import positive_class

    weight_fn(str(cfg.method))  # a wrong method, colormap or layer fails here, before any file is decoded
    palette(str(cfg.colormap))
    model = load_model(cfg.get("ckpt_path"), cfg.paths.output_root, cfg.data.get("image_size"))
    find_layers(model.net, str(cfg.layer))
    classes = model.classes
    target = _target_index(cfg.get("target"), classes)
    files = find_unlabelled(cfg.images, what="images")
    device = select_device(cfg.get("device", "auto"))
    apply_keep_freed_memory(cfg.get("keep_freed_memory"))  # before the first batch, as train.py: 2x faster on a CPU
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    decoded = decode_files(files, model.image_size, cfg.data.cache_dir, cfg.data.get("num_workers"), cfg.data.max_pixels)
    report_skipped(decoded.bad, len(files.paths), out_dir, files.ignored)
    require_some(len(decoded.paths), len(decoded.bad), cfg.images)
    names = output_names(decoded.paths, cfg.images)
    dog = positive_class(classes)
    contrast = bool(cfg.get("contrast", False))
    mapped = ("" if target is None else f", map of {classes[target]}") + (" vs other" if contrast else "")
    records = []
    batches = decoded_batches(decoded, cfg.data.batch_size)
    for out in run_network(model.net, batches, device, cam_layer=str(cfg.layer), cam_method=str(cfg.method),
                           cam_targets=target, cam_contrast=contrast, temperature=model.temperature):
        probs = out.log_probs.exp()
        for i in range(len(out.images)):
            k = out.start + i
            pred = classes[int(probs[i].argmax())]
            title = f"{pred}  P({classes[dog]})={float(probs[i, dog]):.3f}{mapped}  {Path(decoded.paths[k]).name}"
            save_picture(cam_grid([Row(out.images[i], out.cams[i], title[:TITLE_CHARS])], str(cfg.colormap)), out_dir / f"{names[k]}.png")
            if cfg.save_maps:
                np.save(out_dir / f"{names[k]}.npy", out.cams[i].numpy().astype(np.float32))
            records.append((decoded.paths[k], f"{names[k]}.png", pred, float(probs[i, dog])))

    with open(out_dir / "predictions.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "picture", "predicted", f"p_{classes[dog]}"])
        writer.writerows((p, png, pred, f"{pd:.6f}") for p, png, pred, pd in records)
    log.info("%d pictures (%s at %s%s) of %s in %s", len(records), cfg.method, cfg.layer,
             ", maps as .npy" if cfg.save_maps else "", model.path, out_dir)
    return {"metrics": {"images": len(records), "skipped": len(decoded.bad)}, "objective": math.nan, "out_dir": str(out_dir),
            "checkpoint": model.path}


@hydra.main(version_base="1.3", config_path="../conf", config_name="cam")
@hydra_task
def main(cfg: DictConfig) -> dict:
    return make_cams(cfg)


if __name__ == "__main__":
    run_command_line(main)
