"""What every network here takes as input, and the one place that turns it into numbers.

A network takes images as (N, 3, H, W), either uint8 pixels (what the data, eval.py,
predict.py, cam.py and the callbacks hand it) or floats in [0, 1] (what the training
augmentation produces), and normalises them itself with the mean and std it was trained
with. So nothing outside the network needs to know them, and a checkpoint's network
scores raw pixels correctly wherever it is loaded.
"""

from __future__ import annotations

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageInput(nn.Module):
    """uint8 (N, 3, H, W), or float in [0, 1] -> normalised float32, in the same memory format."""

    def __init__(self, mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD) -> None:
        super().__init__()
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        # Not persistent: they are plain numbers in the network's config, so state_dicts stay
        # exactly the original script's (and old checkpoints load strictly).
        self.register_buffer("_mean", torch.tensor(self.mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(self.std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            x = x.float().div_(255.0)
        elif not x.is_floating_point():
            raise TypeError(f"images must be uint8 or float in [0, 1], got {x.dtype}")
        return (x - self._mean.to(x.dtype)) / self._std.to(x.dtype)
