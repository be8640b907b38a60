"""How well a map points at the object, given the object's box (Zhang et al.'s pointing game,
and the share of the map's energy inside the box, as in Score-CAM's localisation test), or its
mask (the same two, and how well the map ranks the object's pixels above the rest)."""

from __future__ import annotations

import torch


def box_masks(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(N, H, W) bool: pixel centres inside each box; boxes are (x0, y0, x1, y1) fractions."""
    ys = (torch.arange(height, device=boxes.device) + 0.5) / height
    xs = (torch.arange(width, device=boxes.device) + 0.5) / width
    x0, y0, x1, y1 = (boxes[:, i].view(-1, 1, 1) for i in range(4))
    return (xs.view(1, 1, -1) >= x0) & (xs.view(1, 1, -1) <= x1) & (ys.view(1, -1, 1) >= y0) & (ys.view(1, -1, 1) <= y1)


# Zhang et al. (2016) count a hit within 15 pixels of the box on 224-pixel images: the maximum
# of a map upsampled from a coarse layer lands to within about one cell of where it points.
POINTING_TOLERANCE = 15 / 224


def pointing_game(cams: torch.Tensor, boxes: torch.Tensor, tolerance: float = POINTING_TOLERANCE) -> torch.Tensor:
    """(N,) bool: does each map's maximum lie inside its box, widened by ``tolerance`` (a fraction
    of the image side) on every side? An all-zero map points nowhere."""
    n, h, w = cams.shape
    margin = torch.tensor([-tolerance, -tolerance, tolerance, tolerance], device=cams.device)
    inside = box_masks(boxes.to(cams.device) + margin, h, w).flatten(1)
    flat = cams.flatten(1)
    peak = flat.argmax(dim=1)
    return inside.gather(1, peak[:, None]).squeeze(1) & (flat.amax(dim=1) > 0)


def energy_in_box(cams: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """(N,) share of each map's total mass that falls inside its box (0 for an all-zero map)."""
    n, h, w = cams.shape
    return energy_in_mask(cams, box_masks(boxes.to(cams.device), h, w))


# --- against masks: the animal's pixels (a probe set's trimaps), or a box drawn as a mask -------


def widen(masks: torch.Tensor, tolerance: float = POINTING_TOLERANCE) -> torch.Tensor:
    """(N, H, W) bool masks grown by ``tolerance`` (a fraction of the side) in every direction,
    as ``pointing_game`` widens a box: a square dilation."""
    radius = round(tolerance * masks.shape[-1])
    if radius < 1:
        return masks
    grown = torch.nn.functional.max_pool2d(masks[:, None].float(), 2 * radius + 1, stride=1, padding=radius)
    return grown[:, 0] > 0


def pointing_in_mask(cams: torch.Tensor, hits: torch.Tensor) -> torch.Tensor:
    """(N,) share of each map's maximal pixels that lie in ``hits`` (a mask already widened by the
    tolerance): 1 or 0 for a map with one peak, the hit chance of a random tie-break for a flat
    one (so a uniform map scores the mask's share of the image). An all-zero map points nowhere."""
    flat, inside = cams.flatten(1), hits.to(cams.device).flatten(1)
    peak = flat.amax(dim=1, keepdim=True)
    at_peak = flat == peak
    share = (at_peak & inside).sum(dim=1) / at_peak.sum(dim=1)
    return torch.where(peak[:, 0] > 0, share, torch.zeros_like(share))


def energy_in_mask(cams: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """(N,) share of each map's total mass on the mask (0 for an all-zero map)."""
    total = cams.flatten(1).sum(dim=1)
    return (cams * masks.to(cams.device)).flatten(1).sum(dim=1) / total.clamp(min=1e-12)


def auroc_in_mask(cams: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """(N,) the chance that a random pixel of the mask scores above a random pixel outside it (ties
    count half): the area under the ROC curve of each map as a pixel classifier. Unlike the energy,
    it does not change under any increasing transform of the map (squaring a map raises its energy
    on the animal, and the centred Gaussian's from 0.59 to 0.71, bench/RESULTS.md), so a map cannot
    buy it by sharpening. NaN for a mask that is empty or covers the whole image.
    The Mann-Whitney form over tie-averaged ranks scores a whole batch at once, where
    torchmetrics' binary_auroc takes one image per call; the ranks come from one sort, each tie
    group's first and last place found by running maxima and minima (a third of the time of
    searching the sorted maps: the callback scores 64 probe maps every epoch)."""
    flat = cams.flatten(1).float() + 0.0  # -0.0 becomes 0.0: equal values, equal bits
    # Non-negative floats sort as their bits read as integers, and integers sort about 40% faster.
    keys = flat if (flat < 0).any() else flat.view(torch.int32)
    values, order = keys.sort(dim=1)
    inside = masks.to(cams.device).flatten(1).gather(1, order)  # in the sorted order
    n = values.shape[1]
    place = torch.arange(n, device=values.device).expand_as(values)
    starts = torch.ones_like(values, dtype=torch.bool)  # where a tie group starts
    starts[:, 1:] = values[:, 1:] != values[:, :-1]
    ends = torch.ones_like(starts)  # where one ends
    ends[:, :-1] = starts[:, 1:]
    first = torch.where(starts, place, 0).cummax(dim=1).values
    last = torch.where(ends, place, n).flip(1).cummin(dim=1).values.flip(1)
    ranks = (first + last).double() / 2 + 1
    pos = inside.sum(dim=1).double()
    neg = n - pos
    u = (ranks * inside).sum(dim=1) - pos * (pos + 1) / 2
    return (u / (pos * neg)).float()  # 0 / 0 = NaN where one side is empty
