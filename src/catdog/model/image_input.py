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
    """uint8 (N, 3, H, W), or float in [0, 1] -> normalised float32 (or the input's float dtype).

    One pass over the pixels, ``x * (1 / std) + (-mean / std)``, written straight into
    ``memory_format`` (the input's unless set: ``Classifier`` sets channels-last when the network
    runs so). The plain ``(x - mean) / std`` after a channels-last copy took three passes, twice
    the time for a 224 px batch on 2 CPU cores (bench/RESULTS.md, session 34)."""

    def __init__(self, mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD) -> None:
        super().__init__()
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        self.memory_format = torch.preserve_format
        # Not persistent: they are plain numbers in the network's config, so state_dicts stay
        # exactly the original script's (and old checkpoints load strictly).
        mean_, std_ = torch.tensor(self.mean).view(1, -1, 1, 1), torch.tensor(self.std).view(1, -1, 1, 1)
        self.register_buffer("_scale", 1.0 / std_, persistent=False)
        self.register_buffer("_shift", -mean_ / std_, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            scale, dtype = self._scale / 255.0, torch.float32
        elif x.is_floating_point():
            scale, dtype = self._scale.to(x.dtype), x.dtype
        else:
            raise TypeError(f"images must be uint8 or float in [0, 1], got {x.dtype}")
        shift = self._shift.to(dtype)
        if x.requires_grad and torch.is_grad_enabled():  # out= does not differentiate (Grad-CAM's input)
            return torch.addcmul(shift, x, scale).to(memory_format=self.memory_format)
        out = torch.empty_like(x, dtype=dtype, memory_format=self.memory_format)
        return torch.addcmul(shift, x, scale, out=out)


def to_channels_last(net: nn.Module) -> nn.Module:
    """``net`` run channels-last (NHWC), in place: its weights, and its normalised input written so
    rather than copied. Faster on GPUs with tensor cores and on CPUs, where max-pools over NCHW
    tensors are 6-12x slower: a checkpoint's network scores and maps 64-224 px images 1.2-1.9x
    faster in fp32 on 2 cores; with the heap kept too (catdog/allocator.py), 224 px images are scored
    2.7x and mapped 1.9x faster than NCHW (bench/RESULTS.md, session 43)."""
    net.to(memory_format=torch.channels_last)
    for module in net.modules():
        if isinstance(module, ImageInput):
            module.memory_format = torch.channels_last
    return net
