"""Per-sample augmentation of a whole batch, on whatever device the batch is on.

The original pipeline augmented each image on its own, on the CPU, in PIL:
RandomHorizontalFlip, RandomRotation(10), ColorJitter(0.2, 0.2, 0.2). torchvision's v2
transforms applied to a batch draw one set of parameters for the whole batch, which is
not the same thing, so this module draws every parameter per sample and applies them in
one batched pass: one ``grid_sample`` for flip + rotation + zoom/shift, then an optional
frame swap (each chosen image's surroundings replaced by another image's), then the colour
adjustments in a per-sample random order, as ColorJitter does, then an optional random
erasing (Zhong et al., 2020; torchvision's RandomErasing, drawn per sample). The output is float in
[0, 1]: the network normalises its own input (``catdog.model.image_input``).
The formulas are torchvision's (tests check equality for fixed parameters), except that the colour
operations are clamped to [0, 1] once, after all three (``DeviceAugment.colour``). ``centre_zoom`` is
the one fixed view of the same geometry that evaluation scores (``model.eval_zoom``).
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from catdog.errors import UserError

_ORDERS = list(itertools.permutations(range(3)))  # brightness, contrast, saturation


@dataclass
class Params:
    """One batch's random draws; each field has one entry per sample."""

    flip: torch.Tensor  # bool
    angle: torch.Tensor  # degrees, counter-clockwise
    scale: torch.Tensor  # < 1 zooms in, > 1 zooms out (the photo shrinks inside a frame, black with padding="zeros")
    shift: torch.Tensor  # (N, 2), fraction of the half-width, x then y
    factors: torch.Tensor  # (N, 3): brightness, contrast, saturation
    order: torch.Tensor  # index into _ORDERS
    erase: torch.Tensor | None = None  # (N, 4): the erased box, x0 y0 x1 y1 as fractions of the side (x0 = x1: none)
    keep: torch.Tensor | None = None  # (N, 4): the box a frame swap keeps, as erase's (the whole image: no swap)


_LUMA = (0.2989, 0.587, 0.114)  # ITU-R 601, as torchvision's rgb_to_grayscale


def _once(make):
    """``make`` cached per argument tuple, so small constant tensors are built once per device:
    building one from a Python list every step would be a host-to-device copy that waits for the
    GPU. Under torch.compile ``make`` runs directly and its tensors become constants of the
    compiled code (Dynamo would otherwise trace through the cache, and warn)."""
    cached = functools.cache(make)
    return functools.wraps(make)(lambda *key: make(*key) if torch.compiler.is_compiling() else cached(*key))


@_once
def _constants(device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    return {
        "luma": torch.tensor(_LUMA, device=device, dtype=dtype),
        "eye": torch.eye(3, device=device, dtype=dtype),
        "orders": torch.tensor(_ORDERS, device=device),
    }


def _colour_map(mean: torch.Tensor, factors: torch.Tensor, order: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each sample's three colour operations, in its order, as one (N, 3, 3) matrix and (N, 3) offset.

    torchvision's three are all ``blend(x, other, f) = f * x + (1 - f) * other`` (then clamped), with
    ``other`` black (brightness), the mean grey level (contrast) or the grey image (saturation). Grey
    is linear in x and the mean grey level linear in the image's channel means ``mean`` (N, 3), so
    each operation is a 3x3 colour matrix plus an offset, and so are the three composed: the means
    follow through each stage on (N, 3) numbers, and the pixels are touched once. ``order`` (N,)
    indexes ``_ORDERS``.
    """
    n = mean.shape[0]
    const = _constants(mean.device, mean.dtype)
    orders, luma, eye = const["orders"][order], const["luma"], const["eye"].expand(n, 3, 3)
    matrix, offset = eye, torch.zeros_like(mean)
    for stage in range(3):
        op = orders[:, stage]
        f = factors.gather(1, op[:, None]).to(mean.dtype)  # (N, 1)
        to_gray = luma.expand(n, 3, 3) * (op == 2).to(mean.dtype).view(n, 1, 1)  # every row w^T: saturation
        step = f.unsqueeze(2) * eye + (1.0 - f.unsqueeze(2)) * to_gray
        grey_level = (1.0 - f) * (mean @ luma)[:, None] * (op == 1).to(mean.dtype)[:, None]  # contrast
        matrix = step @ matrix
        offset = (step @ offset.unsqueeze(2)).squeeze(2) + grey_level
        mean = (step @ mean.unsqueeze(2)).squeeze(2) + grey_level
    return matrix, offset


def affine_grid(theta: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``F.affine_grid(theta, (N, C, h, w), align_corners=False)``, the same numbers, by broadcasting.

    Written out because torch's builds the grid as a batched matrix product over an (N, h*w, 3)
    copy of the base grid: 30 ms for 64 images at 224 px on 2 CPU cores, where this one pass over
    the (N, h, w, 2) output takes 7 ms (bench/RESULTS.md, session 12)."""
    kw = dict(device=theta.device, dtype=theta.dtype)
    xs = torch.linspace(-1.0, 1.0, w, **kw) * ((w - 1) / w)  # pixel centres in [-1, 1]
    ys = torch.linspace(-1.0, 1.0, h, **kw) * ((h - 1) / h)
    per_x, per_y, offset = (theta[:, :, k].reshape(-1, 1, 1, 2) for k in range(3))  # (N, 1, 1, 2): (x, y) outputs
    return xs.view(1, 1, w, 1) * per_x + (ys.view(1, h, 1, 1) * per_y + offset)


def centre_zoom(images: torch.Tensor, scale: float) -> torch.Tensor:
    """uint8 or [0, 1] float (N, 3, H, W) -> float: the centre ``scale`` of each image's side, enlarged
    to the full size (bilinear). It is the view the training zoom draws with no shift, rotation or
    flip, so scoring at the zoom's mean shows the animals at the size training showed them."""
    x = images.float().div_(255.0) if images.dtype == torch.uint8 else images
    theta = torch.zeros(x.shape[0], 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = theta[:, 1, 1] = scale
    return F.grid_sample(x, affine_grid(theta, *x.shape[-2:]), mode="bilinear", padding_mode="zeros", align_corners=False)


def _other_class_donors(labels: torch.Tensor) -> torch.Tensor:
    """(N,) index of each image's donor: the nearest image before it in the batch (cyclically, as
    the plain swap's ``roll(1)``) whose label differs; the one just before where the whole batch is
    one class. Batches are shuffled, so that is a random pick; a gather on the device, no host sync."""
    n = labels.shape[0]
    offsets = torch.arange(1, n, device=labels.device)  # (N-1,): how far back to look
    behind = (torch.arange(n, device=labels.device)[:, None] - offsets) % n  # (N, N-1)
    differs = labels[behind] != labels[:, None]
    first = differs.int().argmax(dim=1)  # the nearest that differs; 0 (the one just before) if none does
    return behind.gather(1, first[:, None]).squeeze(1)


def in_boxes(boxes: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) bool: which pixel centres of each image of ``x`` lie in its box of ``boxes``
    ((N, 4): x0 y0 x1 y1 as fractions of the side, x0 and y0 included)."""
    h, w = x.shape[-2:]
    ys = (torch.arange(h, device=x.device, dtype=x.dtype) + 0.5) / h  # pixel centres, as fractions
    xs = (torch.arange(w, device=x.device, dtype=x.dtype) + 0.5) / w
    box = boxes.to(x.dtype)[:, :, None, None]
    in_x = ((xs >= box[:, 0]) & (xs < box[:, 2])).unsqueeze(-2)  # (N, 1, 1, W)
    in_y = ((ys >= box[:, 1]) & (ys < box[:, 3])).unsqueeze(-1)  # (N, 1, H, 1)
    return in_x & in_y


class DeviceAugment:
    """Random flip, rotation, zoom/shift, frame swap, colour jitter and erasing, drawn per sample."""

    def __init__(
        self,
        hflip: float = 0.5,
        degrees: float = 10.0,
        scale: tuple[float, float] = (1.0, 1.0),
        shift: bool = True,
        brightness: float = 0.2,
        contrast: float = 0.2,
        saturation: float = 0.2,
        interpolation: str = "bilinear",
        erase: float = 0.0,
        erase_area: tuple[float, float] = (0.02, 0.33),
        erase_ratio: tuple[float, float] = (0.3, 3.3),
        frame_swap: float = 0.0,
        frame_keep: tuple[float, float] = (0.5, 0.8),
        frame_donor: str = "any",
        frame_shift: float = 0.0,
        padding: str = "zeros",
    ) -> None:
        self.hflip, self.degrees, self.scale, self.shift = hflip, degrees, tuple(scale), shift
        self.jitter = (brightness, contrast, saturation)
        self.interpolation = interpolation
        self.erase, self.erase_area, self.erase_ratio = erase, tuple(erase_area), tuple(erase_ratio)
        self.frame_swap, self.frame_keep = frame_swap, tuple(frame_keep)
        if not 0.0 <= frame_shift <= 1.0:
            raise UserError(f"model.augment.frame_shift={frame_shift} must lie in [0, 1] (0: the kept box centred, "
                            "1: anywhere it fits)")
        self.frame_shift = frame_shift
        if frame_donor not in ("any", "other_class"):
            raise UserError(f"model.augment.frame_donor={frame_donor!r} must be 'any' or 'other_class'")
        self.frame_donor = frame_donor
        if padding not in ("zeros", "border", "reflection"):
            raise UserError(f"model.augment.padding={padding!r} must be 'zeros', 'border' or 'reflection'")
        self.padding = padding

    # -- drawing ---------------------------------------------------------------------------

    def sample(self, n: int, device: torch.device, generator: torch.Generator | None = None) -> Params:
        def uniform(*shape, low=0.0, high=1.0):
            return low + (high - low) * torch.rand(*shape, device=device, generator=generator)

        scale = uniform(n, low=self.scale[0], high=self.scale[1])
        # A zoomed-in window may move anywhere it still fits inside the image; a zoomed-out photo
        # anywhere it still fits inside the frame: either way the room is |1 - scale|.
        room = (1.0 - scale).abs().unsqueeze(1) if self.shift else torch.zeros(n, 1, device=device)
        factors = torch.stack([uniform(n, low=max(0.0, 1 - j), high=1 + j) for j in self.jitter], dim=1)
        return Params(
            flip=uniform(n) < self.hflip,
            angle=uniform(n, low=-self.degrees, high=self.degrees),
            scale=scale,
            shift=room * uniform(n, 2, low=-1.0, high=1.0),
            factors=factors,
            order=torch.randint(len(_ORDERS), (n,), device=device, generator=generator),
            erase=self._erase_boxes(n, uniform) if self.erase else None,
            keep=self._kept_boxes(n, uniform) if self.frame_swap else None,
        )

    def _kept_boxes(self, n: int, uniform) -> torch.Tensor:
        side = uniform(n, low=self.frame_keep[0], high=self.frame_keep[1])
        half = torch.where(uniform(n) < self.frame_swap, side, torch.ones_like(side)) / 2  # the others keep all
        centre = torch.full((n, 2), 0.5, device=side.device)
        if self.frame_shift:  # drawn only then, so that runs without it keep their random numbers
            # Up to frame_shift of the room the box has on each axis: off the centre, the borrowed
            # surroundings also come up beside the (mostly centred) animal, not only at the photo's edges.
            centre = centre + self.frame_shift * (0.5 - half)[:, None] * uniform(n, 2, low=-1.0, high=1.0)
        return torch.cat([centre - half[:, None], centre + half[:, None]], dim=1)

    def _erase_boxes(self, n: int, uniform) -> torch.Tensor:
        """RandomErasing's box per sample: an area share and a log-uniform aspect ratio, shrunk to fit
        (torchvision redraws up to ten times instead; shrinking keeps the draw count fixed)."""
        area = uniform(n, low=self.erase_area[0], high=self.erase_area[1])
        log_ratio = uniform(n, low=math.log(self.erase_ratio[0]), high=math.log(self.erase_ratio[1]))
        h = (area * log_ratio.exp()).sqrt().clamp(max=1.0)
        w = (area / log_ratio.exp()).sqrt().clamp(max=1.0)
        y0, x0 = uniform(n) * (1 - h), uniform(n) * (1 - w)
        w = torch.where(uniform(n) < self.erase, w, torch.zeros_like(w))  # the others erase nothing
        return torch.stack([x0, y0, x0 + w, y0 + h], dim=1)

    # -- applying --------------------------------------------------------------------------

    def geometry(self, x: torch.Tensor, p: Params) -> torch.Tensor:
        """Flip, then rotate, then zoom/shift, as one resampling (theta maps output to input)."""
        if not (self.degrees or self.scale != (1.0, 1.0)):
            return torch.where(p.flip.view(-1, 1, 1, 1), x.flip(-1), x) if self.hflip else x
        a = torch.deg2rad(p.angle)
        cos, sin = torch.cos(a) * p.scale, torch.sin(a) * p.scale
        sign = torch.where(p.flip, -1.0, 1.0)  # flipping first negates the x of the sampled point
        # Shifts are fractions of the free room; scaled so the outermost samples land on the
        # outermost pixel centres, never in the zero padding.
        h, w = x.shape[-2:]
        tx, ty = p.shift[:, 0] * (1 - 1 / w), p.shift[:, 1] * (1 - 1 / h)
        theta = torch.stack(
            [torch.stack([sign * cos, -sign * sin, sign * tx], 1),
             torch.stack([sin, cos, ty], 1)], 1
        ).to(x.dtype)
        return F.grid_sample(x, affine_grid(theta, h, w), mode=self.interpolation, padding_mode=self.padding, align_corners=False)

    def frame(self, x: torch.Tensor, p: Params, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Outside a box (centred, or anywhere it fits with ``frame_shift``), each chosen image takes
        another image's pixels (by default the one before it in the batch, cyclically); its label stays.

        Kaggle's photos centre the animal, and a model trained on them also decides by the
        surroundings (the maps issue: 61% balanced accuracy on Oxford photos with the animal blurred away).
        Surroundings borrowed from a random other photo, of either class, carry no label, so they
        stop paying; the box keeps 25-64% of the area by default, mostly the animal. Measured: the
        maps move onto the animal; a quarter of the images with a 60-90% box (the default recipe's
        ``model.augment``) costs no accuracy (bench/RESULTS.md, session 30).
        With ``frame_donor="other_class"`` the donor is an image of the other class: surroundings
        that contradict the label, so a quarter of the images swapped leave the surroundings as
        little to say as half of them with random donors.
        """
        if p.keep is None:
            return x
        keep = in_boxes(p.keep, x)
        if self.frame_donor == "any":
            # The one before each image, cyclically, read in place: x.roll(1) would copy the whole
            # batch first (a quarter of the swap's time on a CPU, bench/RESULTS.md session 34).
            out = torch.empty_like(x)
            torch.where(keep[1:], x[1:], x[:-1], out=out[1:])
            torch.where(keep[:1], x[:1], x[-1:], out=out[:1])
            return out
        if labels is None:
            raise ValueError("frame_donor='other_class' needs the batch's labels: call the augmentation with labels=")
        return torch.where(keep, x, x[_other_class_donors(labels)])

    def colour(self, x: torch.Tensor, p: Params) -> torch.Tensor:
        """Brightness, contrast and saturation in each sample's own random order (as ColorJitter),
        as one affine colour map per sample (``_colour_map``), clamped to [0, 1] once.

        torchvision clamps after each operation; here only the end result is: the same numbers
        wherever no intermediate result leaves [0, 1] (tests), and a highlight brightened past white
        and then dimmed stays white instead of turning grey. One matrix product instead of three,
        each with its mean and clamp: 12 -> 4 ms for 64 images at 224 px on 2 CPU cores
        (bench/RESULTS.md, session 37)."""
        if not any(self.jitter):
            return x
        n, c, h, w = x.shape
        matrix, offset = _colour_map(x.mean(dim=(2, 3)), p.factors, p.order)
        out = torch.baddbmm(offset.unsqueeze(2), matrix, x.reshape(n, c, h * w))
        return out.clamp_(0.0, 1.0).view(n, c, h, w)

    def erasing(self, x: torch.Tensor, p: Params, generator: torch.Generator | None = None) -> torch.Tensor:
        """Each sample's box filled with uniform noise (RandomErasing's value="random"), so the
        network cannot learn the box itself as a sign of anything."""
        if p.erase is None:
            return x
        inside = in_boxes(p.erase, x)
        noise = torch.rand(x.shape, device=x.device, dtype=x.dtype, generator=generator)
        return torch.where(inside, noise, x)  # inside: (N, 1, H, W), broadcast over the channels

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None,
                 labels: torch.Tensor | None = None) -> torch.Tensor:
        """uint8 (N, 3, H, W) -> augmented float32 in [0, 1]; ``labels`` only for ``frame_donor="other_class"``.

        Always in float32, also inside the trainer's autocast: bf16 autocast would run the colour
        passes' matrix products in bf16, with a conversion before them, and on a CPU that made the
        augmentation cost twice as much inside a training step (224 px, bf16 Xeon: 85 ms against
        36 ms, bench/RESULTS.md session 33), besides rounding the pixels to 8 bits of mantissa."""
        return self.with_kept_boxes(images, generator, labels)[0]

    def with_kept_boxes(self, images: torch.Tensor, generator: torch.Generator | None = None,
                        labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """As ``__call__``, also returning the frame swap's kept boxes ((N, 4), as ``Params.keep``; None
        when the swap is off): the surroundings penalty needs to know where the swapped-in pixels are."""
        with torch.autocast(images.device.type, enabled=False):
            x = images.float().div_(255.0)
            p = self.sample(x.shape[0], x.device, generator)
            x = self.erasing(self.colour(self.frame(self.geometry(x, p), p, labels), p), p, generator)
            return x, p.keep
