"""Is a map faithful to the model? Deletion and insertion (Petsiuk et al., RISE, 2018), where no
mask says where the animal is: replace the image's pixels, most salient first, by a blurred copy
(deletion: the class probability should fall fast, a small area under the curve is good), or
start from the blurred copy and put the pixels back in the same order (insertion: it should rise
fast, a large area is good).

A few steps along each curve (``STEPS``), every image and step in one pass through
``catdog.inference.run_network``: the original and the blurred image are the curves' shared ends,
so one map costs 2 * (STEPS - 1) forward passes per image, plus 2 for the ends. Pixels with equal
values are taken in a random (seeded) order, so a uniform map gives the curves of a random order:
the reference a map has to beat.
"""

from __future__ import annotations

import math

import torch
from torchvision.transforms.v2.functional import gaussian_blur

from catdog.inference import run_network

STEPS = 8
BLUR_SIGMA = 5 / 224  # RISE blurs 224-px images with sigma 5: as a fraction of the side
IMAGES_PER_PASS = 32  # images whose curves are built at once (memory: 2 * STEPS copies each)


def blurred(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, S, S) images Gaussian-blurred with sigma ``BLUR_SIGMA`` of the side."""
    sigma = max(BLUR_SIGMA * images.shape[-1], 0.5)
    kernel = 2 * math.ceil(2 * sigma) + 1
    return gaussian_blur(images, [kernel, kernel], [sigma, sigma])


def pixel_ranks(cams: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """(N, H, W) long: each pixel's place in its map's order, 0 the most salient; ties random."""
    flat = cams.flatten(1).float()
    shuffle = torch.rand(flat.shape, generator=generator).argsort(dim=1).to(flat.device)
    order = shuffle.gather(1, flat.gather(1, shuffle).argsort(dim=1, descending=True, stable=True))
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(flat.shape[1], device=flat.device).expand_as(order))
    return ranks.view_as(cams)


def _curve_images(images, soft, ranks, steps: int) -> torch.Tensor:
    """(N, 2 + 2 * (steps - 1), 3, S, S): original, blurred, deletion steps 1.., insertion steps 1.."""
    n_pixels = ranks[0].numel()
    shown = [ranks < round(k / steps * n_pixels) for k in range(1, steps)]  # the top k/steps of the pixels
    deleted = [torch.where(m[:, None], soft, images) for m in shown]
    inserted = [torch.where(m[:, None], images, soft) for m in shown]
    return torch.stack([images, soft, *deleted, *inserted], dim=1)


def _auc(curve: torch.Tensor) -> torch.Tensor:
    """(N, steps + 1) values at fractions 0, 1/steps, ..., 1 -> trapezoidal area, (N,)."""
    return torch.trapezoid(curve, dx=1.0 / (curve.shape[1] - 1), dim=1)


def deletion_insertion(net: torch.nn.Module, images: torch.Tensor, cams: torch.Tensor, device: torch.device,
                       targets: torch.Tensor | None = None, steps: int = STEPS, batch_size: int = 64,
                       seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image, the (deletion, insertion) areas, (N,) each, of the probability of its target
    class (default: the class predicted on the whole image) as ``cams`` orders its pixels."""
    if steps < 2:
        raise ValueError("deletion/insertion curves need at least 2 steps")
    generator = torch.Generator().manual_seed(seed)
    deletion, insertion = [], []
    for start in range(0, len(images), IMAGES_PER_PASS):
        part = images[start : start + IMAGES_PER_PASS].to(cams.device)
        ranks = pixel_ranks(cams[start : start + IMAGES_PER_PASS], generator)
        variants = _curve_images(part, blurred(part), ranks, steps)  # (n, V, 3, S, S)
        n, v = variants.shape[:2]
        probs = torch.cat([o.log_probs for o in run_network(net, variants.flatten(0, 1).split(batch_size), device)])
        probs = probs.exp().view(n, v, -1)
        t = probs[:, 0].argmax(dim=1) if targets is None else targets[start : start + n].cpu()
        p = probs.gather(2, t.view(n, 1, 1).expand(n, v, 1))[..., 0]  # (n, V)
        original, soft, dele, ins = p[:, :1], p[:, 1:2], p[:, 2 : steps + 1], p[:, steps + 1 :]
        deletion.append(_auc(torch.cat([original, dele, soft], dim=1)))
        insertion.append(_auc(torch.cat([soft, ins, original], dim=1)))
    return torch.cat(deletion), torch.cat(insertion)
