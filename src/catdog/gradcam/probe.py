"""A probe set: photos with the animal's pixels marked (Oxford-IIIT Pet's trimaps) and, where
known, its head box, decoded once at the network's image size; and how a set of maps scores on
it, beside two maps that know nothing of the image (a centred Gaussian and a uniform map), so a
score can be read against "look at the middle"."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from catdog.data.files import require_folder
from catdog.data.oxford_pets import find_oxford_pets, is_oxford_pets, read_annotations
from catdog.errors import UserError
from catdog.gradcam.scoring import POINTING_TOLERANCE, auroc_in_mask, box_masks, energy_in_mask, pointing_in_mask, widen

CENTRE_SIGMA = 0.25  # the centred reference's sigma, as a fraction of the side


@dataclass
class Probe:
    """uint8 images (N, 3, S, S), labels (N,), animal masks (N, S, S) bool, the masks widened by
    the pointing tolerance, head hit masks (widened boxes) and which images have a head box."""

    paths: list[str]
    images: torch.Tensor
    labels: torch.Tensor
    masks: torch.Tensor
    animal_hits: torch.Tensor
    head_hits: torch.Tensor
    has_head: torch.Tensor
    skipped: list[tuple[str, str]]  # (path, reason): not decodable, or without a mask
    ignored: list[tuple[str, str]] = field(default_factory=list)  # entries set aside by name (.mat files among the images)

    def __len__(self) -> int:
        return len(self.paths)


def spread(n: int, limit: int | None) -> np.ndarray:
    """``limit`` indices spread evenly over ``n`` (the files are sorted by breed: every breed stays)."""
    if limit is None or limit >= n:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, max(limit, 1)).round().astype(int))


def load_probe(root, size: int, limit: int | None = None, what: str = "probe") -> Probe:
    """The Oxford-IIIT Pet folder ``root`` at ``size`` px; images without a usable mask are skipped."""
    from catdog.inference import decode_files  # inference imports the map code, which imports this

    path = require_folder(root, what)
    if not is_oxford_pets(path):
        raise UserError(f"{what}={root} is not an Oxford-IIIT Pet folder (images/ beside annotations/ with trainval.txt, "
                        "test.txt or list.txt): a probe needs the animal masks of annotations/trimaps/")
    files = find_oxford_pets(path)
    keep = spread(len(files.paths), limit)
    files.paths, files.labels = [files.paths[i] for i in keep], [files.labels[i] for i in keep]
    decoded = decode_files(files, size, cache_dir=None)
    skipped = list(decoded.bad)
    rows, masks, heads = [], [], []
    for i, image_path in enumerate(decoded.paths):
        notes = read_annotations(path, image_path, size)
        skipped += [(image_path, p) for p in notes.problems]
        if notes.mask is not None:
            rows.append(i)
            masks.append(notes.mask)
            heads.append(notes.head or (math.nan,) * 4)
    if not rows:
        raise UserError(f"{what}={root}: none of its images has both pixels and a trimap that could be read")
    masks_t = torch.from_numpy(np.stack(masks))
    heads_t = torch.tensor(heads, dtype=torch.float32)
    has_head = ~heads_t.isnan().any(dim=1)
    t = POINTING_TOLERANCE
    widened = torch.nan_to_num(heads_t, nan=-1.0) + torch.tensor([-t, -t, t, t])
    return Probe(
        paths=[decoded.paths[i] for i in rows],
        images=torch.from_numpy(np.ascontiguousarray(decoded.images[decoded.rows[rows]])).permute(0, 3, 1, 2).contiguous(),
        labels=torch.from_numpy(decoded.labels[rows]),
        masks=masks_t,
        animal_hits=widen(masks_t),
        head_hits=box_masks(widened, size, size) & has_head[:, None, None],
        has_head=has_head,
        skipped=skipped,
        ignored=files.ignored,
    )


def probe_scores(cams: torch.Tensor, probe: Probe) -> dict[str, float]:
    """Mean share of map mass on the animal; share of maps whose maximum is on the animal (strictly:
    the issue's measure), and on the animal and on the head within the pointing tolerance (the
    head over the images with a head box, NaN without any); the mean pixel AUROC of the maps
    against the animal's mask, which sharpening a map cannot raise (``auroc_in_mask``)."""
    on_head = pointing_in_mask(cams, probe.head_hits)[probe.has_head.to(cams.device)]
    return {
        "energy_on_animal": float(energy_in_mask(cams, probe.masks).mean()),
        "max_on_animal": float(pointing_in_mask(cams, probe.masks).mean()),
        "auroc_on_animal": float(auroc_in_mask(cams, probe.masks).nanmean()),
        "pointing_on_animal": float(pointing_in_mask(cams, probe.animal_hits).mean()),
        "pointing_on_head": float(on_head.mean()) if len(on_head) else math.nan,
    }


def centre_maps(n: int, size: int, sigma: float = CENTRE_SIGMA) -> torch.Tensor:
    """(n, size, size) centred Gaussians, sigma a fraction of the side, peak 1."""
    xs = (torch.arange(size) + 0.5) / size - 0.5
    g = torch.exp(-(xs**2) / (2 * sigma**2))
    return (g[:, None] * g[None, :]).expand(n, size, size)


def uniform_maps(n: int, size: int) -> torch.Tensor:
    return torch.ones(n, size, size)


def reference_scores(probe: Probe) -> dict[str, dict[str, float]]:
    """The scores of the maps that ignore the image: the bar a real map has to clear."""
    n, size = len(probe), probe.images.shape[-1]
    return {"centre": probe_scores(centre_maps(n, size), probe), "uniform": probe_scores(uniform_maps(n, size), probe)}


CONTEXT_BLUR_SIGMA = 0.1  # of the side: the shape is gone, the colours stay


def context_accuracy(net: torch.nn.Module, probe: Probe, device: torch.device, batch_size: int = 64) -> dict[str, float]:
    """Accuracy on the probe as is, with the animal blurred away and with the background blurred
    away: how far the model decides by the surroundings. A model that looks at the animal falls
    towards chance without it, and keeps its accuracy without the background. Each also balanced
    (the classes' recalls averaged): chance is then 1 / classes whatever the probe's mix, where
    plain accuracy rewards a model that answers the majority class once the animal is gone (the
    Oxford sample is two thirds cats)."""
    from torchmetrics.functional.classification import multiclass_accuracy
    from torchvision.transforms.v2.functional import gaussian_blur

    from catdog.inference import log_probs_of

    sigma = CONTEXT_BLUR_SIGMA * probe.images.shape[-1]
    kernel = min(2 * math.ceil(3 * sigma) + 1, 2 * (probe.images.shape[-1] // 2) - 1)  # odd, within the image
    soft = gaussian_blur(probe.images, [kernel, kernel], [sigma, sigma])
    animal = probe.masks[:, None]
    variants = {"as_is": probe.images, "animal_blurred": torch.where(animal, soft, probe.images),
                "background_blurred": torch.where(animal, probe.images, soft)}
    scores = {}
    for name, images in variants.items():
        log_probs = log_probs_of(net, images.split(batch_size), device)
        predicted, classes = log_probs.argmax(dim=1), log_probs.shape[1]
        scores[f"accuracy_{name}"] = float((predicted == probe.labels).float().mean())
        scores[f"balanced_accuracy_{name}"] = float(multiclass_accuracy(predicted, probe.labels, classes, average="macro"))
    return scores


def grid_picks(labels: torch.Tensor, n: int) -> torch.Tensor:
    """``n`` probe photos for a picture, classes alternating, spread over each class's breeds
    (the files are sorted by breed: the first few would all be one breed of cat)."""
    per_class = [(labels == c).nonzero()[:, 0] for c in labels.unique()]
    per_class = [p[spread(len(p), -(-n // len(per_class)))] for p in per_class]
    picks = [int(p[k]) for k in range(n) for p in per_class if k < len(p)][:n]
    return torch.tensor(picks, dtype=torch.long)


def probe_grid(probe: Probe, cams: torch.Tensor, probs: torch.Tensor, classes: list[str], n: int,
               colormap: str = "jet") -> np.ndarray:
    """The picture of ``n`` probe photos (image | heatmap | overlay), the animal outlined on the overlay."""
    from catdog.gradcam.render import cam_grid, titled_rows

    shown = grid_picks(probe.labels, n)
    rows = titled_rows(probe.images[shown], probe.labels[shown], cams[shown], probs[shown], classes)
    for row, mask in zip(rows, probe.masks[shown]):
        row.outline = mask
    return cam_grid(rows, colormap)
