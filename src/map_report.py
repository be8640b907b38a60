"""Score a checkpoint's maps, every method x layer, on real photos.

    python src/map_report.py ckpt_path=... probe=/data/oxford-iiit-pet data.root=/data/dogs-vs-cats/train
    python src/map_report.py ckpt_path=... probe=... methods=[gradcam,layercam] layers=[relu3] contrast=true

On the probe (an Oxford-IIIT Pet folder: animal masks and head boxes): the share of the map's
mass on the animal, and how often its maximum is on the animal and on the head; and the model's
accuracy on it as is, with the animal blurred away and with the background blurred away. On labelled
photos (``data.root``, any layout eval.py reads): the areas under the deletion and insertion
curves. Beside them the same scores of a centred Gaussian map and a uniform one (whose
deletion/insertion order is random): what a map that ignores the image gets. Writes
map_report.csv, map_report.md, map_report.png and map_report_probe_grid.png (the first method x
layer's maps of a few probe photos, the animal outlined) into the run folder
(outputs/map_report/<time>/); unreadable files are listed in bad_files.csv.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from catdog.allocator import apply_keep_freed_memory
from catdog.command_line import run_command_line
from catdog.errors import UserError
from catdog.resolvers import register_resolvers
from catdog.task import hydra_task

log = logging.getLogger("catdog.map_report")
register_resolvers()


def _photos(cfg: DictConfig, image_size: int):
    """The labelled photos' pixels (uint8 (N, 3, S, S); None when none decodes), spread over the
    folder, the files that could not be read, and the entries set aside by name."""
    from catdog.data.files import find_labelled
    from catdog.gradcam.probe import spread
    from catdog.inference import decode_files, decoded_batches

    if cfg.get("faithfulness_images") == 0:
        raise UserError("faithfulness_images=0 measures no deletion or insertion curve: leave out data.root to skip "
                        "them, or give how many photos to use")
    files = find_labelled(cfg.data.root)
    keep = spread(len(files.paths), cfg.get("faithfulness_images"))
    files.paths, files.labels = [files.paths[i] for i in keep], [files.labels[i] for i in keep]
    decoded = decode_files(files, image_size, cfg.data.cache_dir, cfg.data.get("num_workers"), cfg.data.max_pixels)
    photos = torch.cat(list(decoded_batches(decoded, len(decoded.paths)))) if decoded.paths else None
    return photos, decoded.bad, files.ignored


def _maps(model, images: torch.Tensor, device, cfg: DictConfig, method: str, layer: str):
    """The maps of the predicted class and the log-probabilities, from one pass over ``images``."""
    from catdog.inference import maps_of

    return maps_of(model.net, images, device, int(cfg.data.batch_size), layer, method, bool(cfg.contrast),
                   model.temperature)


def _scores(net, probe, probe_maps, photos, photo_maps_of, device, cfg: DictConfig) -> dict:
    """Every score of one kind of map: ``probe_maps`` are its maps of the probe, ``photo_maps_of(images)``
    makes them for the labelled photos."""
    from catdog.gradcam.faithfulness import deletion_insertion
    from catdog.gradcam.probe import probe_scores

    row = {}
    if probe is not None:
        row.update(probe_scores(probe_maps, probe))
    if photos is not None:
        deletion, insertion = deletion_insertion(net, photos, photo_maps_of(photos), device,
                                                 steps=int(cfg.faithfulness_steps), batch_size=int(cfg.data.batch_size))
        row.update(deletion_auc=float(deletion.mean()), insertion_auc=float(insertion.mean()))
    return row


def map_report(cfg: DictConfig) -> dict:
    from catdog.data.report import report_skipped
    from catdog.gradcam.maps import find_layers, weight_fn
    from catdog.gradcam.probe import centre_maps, context_accuracy, load_probe, probe_grid, uniform_maps
    from catdog.gradcam.render import save_picture
    from catdog.gradcam.report_table import write_csv, write_markdown, write_picture
    from catdog.inference import load_model, require_some, select_device

    methods, layers = [str(m) for m in cfg.methods], [str(layer) for layer in cfg.layers]
    for method in methods:  # a wrong method or layer fails before any file is decoded
        weight_fn(method)
    if not cfg.get("probe") and not cfg.data.get("root"):
        raise UserError("nothing to score: add probe=<Oxford-IIIT Pet folder>, data.root=<labelled photos>, or both")
    model = load_model(cfg.get("ckpt_path"), cfg.paths.output_root, cfg.data.get("image_size"))
    for layer in layers:
        find_layers(model.net, layer)
    device = select_device(cfg.get("device", "auto"))
    apply_keep_freed_memory(cfg.get("keep_freed_memory"))  # before the first batch, as train.py: 2x faster on a CPU
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    probe = load_probe(cfg.probe, model.image_size, cfg.get("probe_images")) if cfg.get("probe") else None
    photos, photos_bad, ignored = _photos(cfg, model.image_size) if cfg.data.get("root") else (None, [], [])
    bad = [*photos_bad, *(probe.skipped if probe is not None else [])]  # undecodable or maskless: each with its reason
    ignored += probe.ignored if probe is not None else []
    used = (0 if photos is None else len(photos)) + (0 if probe is None else len(probe))
    report_skipped(bad, used + len(bad), out_dir, ignored)
    if cfg.data.get("root"):  # after the report, which says why
        require_some(0 if photos is None else len(photos), len(photos_bad), f"data.root={cfg.data.root}")

    rows = []
    for method in methods:
        for layer in layers:
            photo_maps_of = lambda images: _maps(model, images, device, cfg, method, layer)[0]  # noqa: E731
            probe_maps = None
            if probe is not None:
                probe_maps, log_probs = _maps(model, probe.images, device, cfg, method, layer)
                if not rows and cfg.grid_images:  # the first method x layer's: the callback's default
                    save_picture(probe_grid(probe, probe_maps, log_probs.exp(), model.classes, int(cfg.grid_images)),
                             out_dir / "map_report_probe_grid.png")
            rows.append({"method": method, "layer": layer,
                         **_scores(model.net, probe, probe_maps, photos, photo_maps_of, device, cfg)})
            log.info("%s %s: %s", method, layer, {k: round(v, 3) for k, v in rows[-1].items() if isinstance(v, float)})
    size = model.image_size
    for name, reference in (("centre", centre_maps), ("uniform", uniform_maps)):
        probe_maps = reference(len(probe), size) if probe is not None else None
        rows.append({"method": name, "layer": "-", **_scores(model.net, probe, probe_maps, photos,
                                                            lambda images: reference(len(images), size), device, cfg)})

    context = context_accuracy(model.net, probe, device, int(cfg.data.batch_size)) if probe is not None else {}
    header = [f"# Maps of {model.path}", "",
              f"- probe: {cfg.get('probe') or '-'} ({len(probe) if probe is not None else 0} photos with masks, "
              f"{int(probe.has_head.sum()) if probe is not None else 0} with head boxes)",
              f"- deletion/insertion: {cfg.data.get('root') or '-'} ({len(photos) if photos is not None else 0} photos, "
              f"{cfg.faithfulness_steps} steps, blurred copy)",
              f"- {size} px, target: {'predicted class minus the other' if cfg.contrast else 'predicted class'}, {device}",
              "- centre: a centred Gaussian (sigma a quarter of the side); uniform: a flat map (a random deletion order)"]
    if context:
        header.append("- accuracy on the probe: {accuracy_as_is:.3f} as is, {accuracy_animal_blurred:.3f} with the animal "
                      "blurred away, {accuracy_background_blurred:.3f} with the background blurred away; balanced "
                      "(chance 1 / classes): {balanced_accuracy_as_is:.3f}, {balanced_accuracy_animal_blurred:.3f}, "
                      "{balanced_accuracy_background_blurred:.3f}".format(**context))
    write_csv(rows, out_dir / "map_report.csv")
    write_markdown(rows, out_dir / "map_report.md", header)
    write_picture(rows, out_dir / "map_report.png")
    print((out_dir / "map_report.md").read_text(), flush=True)
    best = max((r.get("energy_on_animal", math.nan) for r in rows[: len(methods) * len(layers)]), default=math.nan)
    return {"metrics": {"rows": len(rows), **context}, "objective": best, "out_dir": str(out_dir)}


@hydra.main(version_base="1.3", config_path="../conf", config_name="map_report")
@hydra_task
def main(cfg: DictConfig) -> dict:
    return map_report(cfg)


if __name__ == "__main__":
    run_command_line(main)
