"""The original student's network, with its layer names kept so its state_dict loads.

Three conv blocks (conv -> ReLU -> 2x2 max-pool; ``pool`` sets each block's size), then
fc1 -> ReLU -> dropout -> fc2.
It takes uint8 images (N, 3, H, W), or floats in [0, 1], and normalises them itself
(``ImageInput``); its ``config`` holds the class names beside the options. At 224 px the feature map entering fc1 is 128 x 28 x 28, exactly as in the original.
The options below default to the original network; none renames an original layer with
weights (the one weightless 2x2 ``pool`` became ``pool1``-``pool3``). The
config (conf/model/simple_cnn.yaml) turns BatchNorm on and sets the pools to 2, 4, 4, as the best
recipe measured on real photos has them (README); bench/RESULTS.md records what each option measured.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from catdog.errors import UserError
from catdog.model.image_input import IMAGENET_MEAN, IMAGENET_STD, ImageInput

HEADS = ("fc", "gap")


class SimpleCNN(nn.Module):
    def __init__(
        self,
        image_size: int = 224,
        classes: tuple[str, ...] = ("cat", "dog"),
        batch_norm: bool = False,
        head: str = "fc",
        dropout: float = 0.5,
        hidden: int = 512,
        channels: tuple[int, int, int] = (32, 64, 128),
        pool: tuple[int, int, int] = (2, 2, 2),
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        if len(pool) != 3 or min(pool) < 1:
            raise UserError(f"model.net.pool={list(pool)} must be three positive max-pool sizes, one per conv block")
        pools = [int(k) for k in pool]
        stride = pools[0] * pools[1] * pools[2]
        if image_size % stride or image_size < stride:
            near = [m for m in (image_size // stride * stride, (image_size // stride + 1) * stride) if m > 0] or [stride]
            fits = " or ".join(map(str, near))
            original = ", or model.net.pool=[2,2,2] (the original's)" if pools != [2, 2, 2] and image_size % 8 == 0 else ""
            raise UserError(f"data.image_size={image_size} must be a positive multiple of {stride} "
                            f"(the product of model.net.pool={pools}): use {fits}{original}")
        if head not in HEADS:
            raise UserError(f"model.net.head={head!r} is not one of {HEADS}")
        if len(channels) != 3 or min(channels) < 1:
            raise UserError(f"model.net.channels={list(channels)} must be three positive widths, one per conv block")
        c1, c2, c3 = (int(c) for c in channels)
        if len(classes) < 2:
            raise UserError(f"a classifier needs at least two classes, got {list(classes)}")
        self.image_size, self.head, self.classes = image_size, head, [str(c) for c in classes]
        # Plain numbers and strings that rebuild this network: saved in checkpoints, which then
        # load without unpickling any object (see checkpoint_load.py).
        self.config = dict(image_size=image_size, classes=self.classes, batch_norm=batch_norm, head=head,
                           dropout=dropout, hidden=hidden, channels=[c1, c2, c3], pool=pools, mean=list(mean), std=list(std))
        self.input = ImageInput(mean, std)
        self.conv1 = nn.Conv2d(3, c1, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(c1, c2, kernel_size=3, padding=1)
        self.conv3 = nn.Conv2d(c2, c3, kernel_size=3, padding=1)
        # Identity keeps the original's forward (and state_dict keys) when BatchNorm is off.
        norm = nn.BatchNorm2d if batch_norm else lambda _: nn.Identity()
        self.bn1, self.bn2, self.bn3 = norm(c1), norm(c2), norm(c3)
        # Larger pools widen what each block sees (its receptive field), for less work: at 224 px
        # the original's 2x2 leave conv3 seeing about 22 px of an animal (bench/RESULTS.md, session 25).
        self.pool1, self.pool2, self.pool3 = (nn.MaxPool2d(k, k) for k in pools)
        # ReLUs as modules (no weights: the state_dict is unchanged) so hooks can see a block's
        # output after the nonlinearity: Grad-CAM on relu3 weighs only positive evidence.
        self.relu1, self.relu2, self.relu3 = nn.ReLU(), nn.ReLU(), nn.ReLU()
        side = image_size // stride
        # "gap": global average pooling, so fc1 has c3 inputs instead of c3*side*side
        # (51M parameters at 224 px with the original's 128), which over-fits small data sets.
        self.fc1 = nn.Linear(c3 if head == "gap" else c3 * side * side, hidden)
        self.fc2 = nn.Linear(hidden, len(self.classes))
        self.dropout = nn.Dropout(dropout)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu1(self.bn1(self.conv1(x))))
        x = self.pool2(self.relu2(self.bn2(self.conv2(x))))
        return self.pool3(self.relu3(self.bn3(self.conv3(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(self.input(x))
        x = x.mean(dim=(2, 3)) if self.head == "gap" else torch.flatten(x, 1)
        x = self.dropout(F.relu(self.fc1(x)))
        return self.fc2(x)
