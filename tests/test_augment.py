"""Per-sample device augmentation: its own draws per image, torchvision's formulas per draw."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import InterpolationMode

from catdog.data.augment import _ORDERS, DeviceAugment, Params, affine_grid, centre_zoom, in_boxes
from catdog.errors import UserError


def _params(n, **overrides) -> Params:
    base = dict(flip=torch.zeros(n, dtype=torch.bool), angle=torch.zeros(n), scale=torch.ones(n),
                shift=torch.zeros(n, 2), factors=torch.ones(n, 3), order=torch.zeros(n, dtype=torch.long))
    return Params(**{**base, **overrides})


def _cpu_reference(img: torch.Tensor, flip: bool, angle: float, factors, order) -> torch.Tensor:
    """The original's per-image pipeline, in torchvision's functional ops, with fixed parameters."""
    if flip:
        img = TF.horizontal_flip(img)
    img = TF.rotate(img, angle, interpolation=InterpolationMode.BILINEAR)
    ops = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation]
    for op in _ORDERS[order]:
        img = ops[op](img, factors[op])
    return img


def test_parameters_differ_across_a_batch():
    p = DeviceAugment().sample(64, torch.device("cpu"), torch.Generator().manual_seed(0))
    assert 10 < int(p.flip.sum()) < 54
    assert p.angle.unique().numel() == 64 and p.angle.abs().max() <= 10
    for j in range(3):
        assert p.factors[:, j].unique().numel() == 64
        assert p.factors[:, j].min() >= 0.8 and p.factors[:, j].max() <= 1.2
    assert p.order.unique().numel() == 6


def test_fixed_parameters_match_the_cpu_transforms():
    """Where no colour operation's result leaves [0, 1] (torchvision clamps after each, ours once at the
    end), the batch pipeline is the original's per-image one, every order of the three included."""
    torch.manual_seed(0)
    x = 0.3 + 0.4 * torch.rand(6, 3, 40, 40)  # mid-range pixels: a factor of 0.8-1.2 keeps every stage inside [0, 1]
    p = _params(6, flip=torch.tensor([0, 1, 0, 1, 1, 0], dtype=torch.bool),
                factors=torch.tensor([[1.2, 0.8, 1.1], [0.9, 1.15, 0.85], [1.0, 1.0, 1.0],
                                      [0.8, 1.2, 1.2], [1.1, 0.9, 0.8], [1.05, 1.05, 0.95]]),
                order=torch.arange(6))
    aug = DeviceAugment()
    out = aug.colour(aug.geometry(x, p), p)
    for i in range(6):
        ref = _cpu_reference(x[i], bool(p.flip[i]), 0.0, p.factors[i].tolist(), i)
        assert (out[i] - ref).abs().max() < 1e-5, i
    # The rotation, colour left alone: its black corners are torchvision's too.
    turned = _params(6, angle=torch.tensor([0.0, 5.0, -9.5, 3.0, 0.0, 10.0]), flip=p.flip)
    out = aug.colour(aug.geometry(x, turned), turned)
    for i in range(6):
        ref = _cpu_reference(x[i], bool(p.flip[i]), float(turned.angle[i]), [1.0, 1.0, 1.0], 0)
        assert (out[i] - ref).abs().max() < 1e-5, i


def test_colour_clamps_once_at_the_end():
    """A highlight brightened past white and then dimmed stays white (torchvision clamps in between and
    turns it grey); every result still lies in [0, 1]."""
    x = torch.full((1, 3, 4, 4), 0.5)
    x[..., 0, 0] = 0.95
    p = _params(1, factors=torch.tensor([[1.2, 0.8, 1.0]]), order=torch.tensor([0]))  # brightness, then contrast
    out = DeviceAugment().colour(x, p)
    mean = x.mean()  # grey, so its grey level is its mean (to 1e-4: the luma weights sum to 0.9999)
    assert torch.allclose(out[0, :, 0, 0], torch.ones(3))  # 0.8 * (1.2 * 0.95) + 0.2 * 1.2 * mean > 1
    assert torch.allclose(out[0, :, 1, 1], 0.8 * 1.2 * 0.5 + 0.2 * 1.2 * mean, atol=1e-4)  # inside [0, 1]: the blend
    assert _cpu_reference(x[0], False, 0.0, [1.2, 0.8, 1.0], 0)[:, 0, 0].max() < 0.95
    wild = DeviceAugment(brightness=0.9, contrast=0.9, saturation=0.9)(torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8),
                                                                     torch.Generator().manual_seed(0))
    assert wild.min() >= 0.0 and wild.max() <= 1.0


def test_grid_by_broadcasting_is_torchs_affine_grid():
    g = torch.Generator().manual_seed(3)
    theta = torch.randn(5, 2, 3, generator=g)
    for h, w in [(40, 40), (24, 56), (1, 7)]:
        ours = affine_grid(theta, h, w)
        assert ours.shape == (5, h, w, 2)
        assert torch.allclose(ours, F.affine_grid(theta, [5, 3, h, w], align_corners=False), atol=1e-6)


def test_centre_zoom_is_the_training_zoom_without_shift_rotation_or_flip():
    x = torch.randint(0, 256, (3, 3, 24, 24), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    # The whole image, as it is (to float rounding of the sampling grid: 1.4-1.6e-6 over random images)
    assert torch.allclose(centre_zoom(x, 1.0), x.float() / 255, atol=1e-5)
    aug = DeviceAugment(brightness=0, contrast=0, saturation=0)
    still = _params(3, scale=torch.full((3,), 0.6))
    assert torch.allclose(centre_zoom(x, 0.6), aug.geometry(x.float() / 255, still), atol=1e-6)
    framed = torch.zeros(1, 3, 40, 40)
    framed[..., 10:30, 10:30] = 1.0  # the centre half of the side
    assert (centre_zoom(framed, 0.5)[..., 1:-1, 1:-1] == 1.0).all()  # enlarged to fill the picture


def test_zoom_and_shift_stay_inside_the_image():
    aug = DeviceAugment(degrees=0, scale=(0.5, 0.5), brightness=0, contrast=0, saturation=0)
    p = aug.sample(200, torch.device("cpu"), torch.Generator().manual_seed(1))
    assert (p.shift.abs() <= 0.5 + 1e-6).all() and p.shift.abs().max() > 0.4
    x = torch.ones(1, 3, 32, 32)
    corner = _params(1, scale=torch.tensor([0.5]), shift=torch.tensor([[0.5, -0.5]]))
    zoomed = aug.geometry(x, corner)
    assert zoomed.min() > 0.99  # no padding sampled: the window lies within the image


def test_zoom_out_shrinks_the_whole_photo_into_a_frame_at_a_random_place():
    aug = DeviceAugment(hflip=0, degrees=0, scale=(2.0, 2.0), brightness=0, contrast=0, saturation=0)
    x = torch.ones(8, 3, 32, 32)
    p = aug.sample(8, torch.device("cpu"), torch.Generator().manual_seed(2))
    assert (p.shift.abs() <= 1.0).all() and p.shift.abs().max() > 0.5  # the room of a half-size photo
    out = aug.geometry(x, p)
    covered = (out[:, 0] > 0.5).float()
    assert torch.allclose(covered.mean(dim=(1, 2)), torch.full((8,), 0.25), atol=0.04)  # a quarter of the frame
    rows = covered.sum(dim=2).nonzero()[:, 1].view(8, -1)  # the rows each shrunk photo covers
    assert rows.float().mean(dim=1).std() > 1.0  # placed in different places


def test_rotation_corners_are_black_by_default_and_filled_from_the_photo_with_border_or_reflection():
    x = torch.ones(1, 3, 32, 32)
    tilted = _params(1, angle=torch.tensor([20.0]))
    corners = {}
    for padding in ("zeros", "border", "reflection"):
        aug = DeviceAugment(hflip=0, padding=padding, brightness=0, contrast=0, saturation=0)
        corners[padding] = aug.geometry(x, tilted)[..., :3, :3]
    assert corners["zeros"].max() < 0.5  # the rotation's corner lies outside the photo
    assert (corners["border"] > 0.99).all() and (corners["reflection"] > 0.99).all()
    with pytest.raises(UserError, match="^model.augment.padding='wrap' must be 'zeros', 'border' or 'reflection'$"):
        DeviceAugment(padding="wrap")


def test_erasing_fills_a_box_of_the_drawn_area_with_noise_in_the_drawn_share_of_samples():
    aug = DeviceAugment(hflip=0, degrees=0, brightness=0, contrast=0, saturation=0, erase=0.5,
                        erase_area=(0.1, 0.2))
    images = torch.full((400, 3, 32, 32), 255, dtype=torch.uint8)
    out = aug(images, torch.Generator().manual_seed(3))
    erased = (out < 1.0).any(dim=1).float().mean(dim=(1, 2))  # white pixels the noise replaced
    hit = erased > 0
    assert 160 < int(hit.sum()) < 240  # about half the samples
    assert 0.07 < float(erased[hit].mean()) < 0.19  # boxes of 10-20% of the area (some shrunk to fit)
    assert torch.equal(out, aug(images, torch.Generator().manual_seed(3)))  # seeded
    assert not torch.equal(out, aug(images, torch.Generator().manual_seed(4)))


def test_augmented_images_are_floats_in_unit_range_with_changed_pixels():
    """The network normalises its own input (test_simple_cnn.py): augmentation hands it [0, 1]."""
    aug = DeviceAugment()
    images = torch.randint(0, 256, (8, 3, 24, 24), dtype=torch.uint8)
    trained = aug(images, generator=torch.Generator().manual_seed(0))
    assert trained.shape == images.shape and trained.dtype == torch.float32
    assert trained.min() >= 0.0 and trained.max() <= 1.0
    assert not torch.allclose(trained, images / 255.0)
    identity = DeviceAugment(hflip=0, degrees=0, brightness=0, contrast=0, saturation=0)
    assert torch.equal(identity(images), images / 255.0)


def test_autocast_leaves_the_augmentation_in_float32():
    """The trainer's bf16 autocast is for the network: inside it the augmentation's numbers are
    the same as outside (bf16 colour passes rounded them by up to 0.01, and cost twice as much)."""
    aug = DeviceAugment(scale=(0.75, 1.0), frame_swap=0.5, erase=0.5)
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    plain = aug(images, generator=torch.Generator().manual_seed(3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = aug(images, generator=torch.Generator().manual_seed(3))
    assert under_autocast.dtype == torch.float32 and torch.equal(under_autocast, plain)


def test_same_generator_seed_same_augmentation():
    aug = DeviceAugment(scale=(0.75, 1.0))
    images = torch.randint(0, 256, (4, 3, 24, 24), dtype=torch.uint8)
    a = aug(images, generator=torch.Generator().manual_seed(5))
    b = aug(images, generator=torch.Generator().manual_seed(5))
    c = aug(images, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_flip_only_skips_resampling():
    aug = DeviceAugment(degrees=0, brightness=0, contrast=0, saturation=0)
    x = torch.rand(2, 3, 8, 8)
    out = aug.geometry(x, _params(2, flip=torch.tensor([True, False])))
    assert torch.equal(out[0], x[0].flip(-1)) and torch.equal(out[1], x[1])


@pytest.mark.slow
def test_compiled_training_augmentation_is_per_sample_and_seeded():
    """What the training step runs on a GPU (model.compile): torch.compile of the augmentation. Its
    random numbers come from the compiler's own generator, so check what matters: every sample
    still gets its own draw, the per-step seed still fixes the result (exact resume), and the
    pixels come out as the eager version's do for the same parameters."""
    aug = DeviceAugment(scale=(0.75, 1.0))
    compiled = torch.compile(aug.__call__, dynamic=False)
    same = torch.randint(0, 256, (1, 3, 24, 24), dtype=torch.uint8).expand(16, 3, 24, 24).contiguous()
    torch.manual_seed(3)
    a = compiled(same)
    torch.manual_seed(3)
    b = compiled(same)
    torch.manual_seed(4)
    c = compiled(same)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert len({tuple(row.tolist()) for row in a.flatten(1)[:, :50]}) == 16  # one image, 16 different results
    eager = aug(same, generator=torch.Generator().manual_seed(0))
    assert abs(float(a.mean() - eager.mean())) < 0.2 and abs(float(a.std() - eager.std())) < 0.2

    x = torch.rand(6, 3, 40, 40)
    p = aug.sample(6, torch.device("cpu"), torch.Generator().manual_seed(1))
    fused = torch.compile(lambda x, p: aug.colour(aug.geometry(x, p), p), dynamic=False)
    assert (fused(x, p) - aug.colour(aug.geometry(x, p), p)).abs().max() < 1e-4


def test_frame_swap_keeps_each_chosen_images_centre_and_takes_the_next_images_surroundings():
    aug = DeviceAugment(hflip=0, degrees=0, brightness=0, contrast=0, saturation=0, frame_swap=0.5,
                        frame_keep=(0.5, 0.5))
    n = 250
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 3, 16, 16).contiguous()
    out = (aug(images, torch.Generator().manual_seed(0)) * 255).round().to(torch.uint8)
    own = torch.arange(n, dtype=torch.uint8).view(n, 1, 1)
    centre, corner = out[:, 0, 4:12, 4:12], out[:, 0, :4, :4]  # the kept half of the side, and outside it
    assert torch.equal(centre, own.expand_as(centre))  # every image keeps its centre
    swapped = (corner != own).all(dim=(1, 2))
    assert 100 < int(swapped.sum()) < 150  # about half the images
    assert torch.equal(corner[swapped], own.roll(1, 0).expand_as(corner)[swapped])  # from another image
    assert torch.equal(corner[~swapped], own.expand_as(corner)[~swapped])
    ring = out[:, 0].clone()
    ring[:, 4:12, 4:12] = corner[:, :1, :1]  # the whole frame outside the box: one image's pixels
    assert (ring == corner[:, :1, :1]).all()
    every = DeviceAugment(hflip=0, degrees=0, brightness=0, contrast=0, saturation=0, frame_swap=1.0,
                          frame_keep=(0.5, 0.5))
    corners = (every(images[:5]) * 255).round().to(torch.uint8)[:, 0, 0, 0]
    assert corners.tolist() == [4, 0, 1, 2, 3]  # the first image's surroundings from the last, cyclically


def test_frame_shift_moves_the_kept_box_anywhere_it_fits_and_leaves_centred_runs_as_they_were():
    centred = DeviceAugment(frame_swap=0.5, frame_keep=(0.6, 0.9))
    shifted = DeviceAugment(frame_swap=0.5, frame_keep=(0.6, 0.9), frame_shift=1.0)
    n, cpu = 4000, torch.device("cpu")
    a = centred.sample(n, cpu, torch.Generator().manual_seed(3))
    b = shifted.sample(n, cpu, torch.Generator().manual_seed(3))
    side = b.keep[:, 2] - b.keep[:, 0]
    assert torch.allclose(side, a.keep[:, 2] - a.keep[:, 0]) and torch.allclose(side, b.keep[:, 3] - b.keep[:, 1])
    assert (b.keep[:, :2] >= -1e-6).all() and (b.keep[:, 2:] <= 1 + 1e-6).all()  # always inside the image
    centre = (b.keep[:, :2] + b.keep[:, 2:]) / 2
    swapped = side < 1
    off = (centre[swapped] - 0.5).abs()
    room = ((1 - side[swapped]) / 2)[:, None]
    assert (off <= room + 1e-6).all() and (off > 0.75 * room).float().mean() > 0.2  # reaching the edges, uniformly
    assert (centre[~swapped] == 0.5).all()  # an image not swapped keeps all of itself
    # 0 (the default) draws nothing more: a run without it keeps every random number it had
    default = DeviceAugment(frame_swap=0.5, frame_keep=(0.6, 0.9), frame_shift=0.0)
    c = default.sample(n, cpu, torch.Generator().manual_seed(3))
    assert torch.equal(a.keep, c.keep) and torch.equal(a.angle, c.angle)
    assert torch.equal(((a.keep[:, :2] + a.keep[:, 2:]) / 2), torch.full((n, 2), 0.5))
    # the pixels follow the box (and so does the surroundings penalty, which reads the same boxes)
    every = DeviceAugment(hflip=0, degrees=0, brightness=0, contrast=0, saturation=0, frame_swap=1.0,
                          frame_keep=(0.5, 0.5), frame_shift=1.0)
    images = torch.arange(64, dtype=torch.uint8).view(64, 1, 1, 1).expand(64, 3, 16, 16).contiguous()
    out, keep = every.with_kept_boxes(images, torch.Generator().manual_seed(0))
    own = (out * 255).round().to(torch.uint8) == images
    assert torch.equal(own[:, :1], in_boxes(keep, out)) and int(in_boxes(keep, out).sum()) == 64 * 64
    assert len({tuple(k.tolist()) for k in keep}) > 32  # boxes in many places
    with pytest.raises(UserError, match=r"^model.augment.frame_shift=1.5 must lie in \[0, 1\]"):
        DeviceAugment(frame_shift=1.5)


def test_frame_swap_can_take_the_surroundings_from_an_image_of_the_other_class():
    aug = DeviceAugment(hflip=0, degrees=0, brightness=0, contrast=0, saturation=0, frame_swap=1.0,
                        frame_keep=(0.5, 0.5), frame_donor="other_class")
    labels = torch.tensor([0, 0, 1, 0, 1, 1, 0, 0])  # runs of one class: "the next image" would often share it
    n = len(labels)
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 3, 16, 16).contiguous()
    out = (aug(images, torch.Generator().manual_seed(0), labels=labels) * 255).round().long()
    assert torch.equal(out[:, 0, 8, 8], torch.arange(n))  # every image keeps its centre
    donors = out[:, 0, 0, 0]
    assert torch.equal(donors, torch.tensor([5, 5, 1, 2, 3, 3, 5, 5]))  # the nearest before it of the other class, cyclically
    one_class = aug(images, torch.Generator().manual_seed(0), labels=torch.zeros(n, dtype=torch.long))
    assert torch.equal((one_class[:, 0, 0, 0] * 255).round().long(), torch.arange(n).roll(1))  # else the one before
    with pytest.raises(ValueError, match="needs the batch's labels"):
        aug(images)
    with pytest.raises(UserError, match="^model.augment.frame_donor='same_class' must be 'any' or 'other_class'$"):
        DeviceAugment(frame_donor="same_class")
