"""An experiment for the maps issue (13): the Classifier, plus a penalty on the input gradient that falls
on surroundings known to say nothing of the label.

"Right for the right reasons" (Ross et al., 2017) penalises the input gradient where an annotation
says the evidence is not. Kaggle's photos have no masks, but the surroundings swap
(`model.augment.frame_swap`) makes its own: outside the kept box, a swapped image shows another
photo's pixels, which cannot be evidence for its label. The penalty is the share of the squared input
gradient of log p(label) that lies there, averaged over the swapped images: scale-free (0 to 1), so
`model.surroundings_penalty` weighs it against the cross-entropy directly. It needs a second backward
pass through the network (about 9x the training time at 64 px on 2 CPU cores, bench/RESULTS.md
session 34), so it is a measured option here, not part of `src/`.

    PYTHONPATH=bench python src/train.py model._target_=surroundings_penalty.SurroundingsPenaltyClassifier \\
        +model.surroundings_penalty=1.0 ...
    python bench/recipes.py --jobs surroundings_penalty:0 ...   # the same, as a recipe
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from catdog.data.augment import _in_boxes
from catdog.model.classifier import Classifier


def outside_share(grad: torch.Tensor, outside: torch.Tensor) -> torch.Tensor:
    """(N,): the share of each image's squared gradient (summed over channels) on ``outside`` (N, 1, H, W)."""
    energy = grad.float().pow(2).sum(dim=1, keepdim=True)
    return (energy * outside).sum(dim=(1, 2, 3)) / energy.sum(dim=(1, 2, 3)).clamp_min(1e-12)


class SurroundingsPenaltyClassifier(Classifier):
    def __init__(self, *args, surroundings_penalty: float = 1.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.surroundings_penalty = surroundings_penalty

    def training_step(self, batch, batch_idx):
        images, y = batch
        self._seed_step(batch_idx)
        aug = self.augment
        with torch.autocast(images.device.type, enabled=False):  # as DeviceAugment.__call__, keeping its draws
            x = images.float() / 255.0
            p = aug.sample(x.shape[0], x.device)
            x = aug.apply(x, p, y)
        if p.keep is None:
            raise ValueError("the surroundings penalty needs model.augment.frame_swap > 0")
        outside = (~_in_boxes(p.keep, x)).to(x.dtype)  # the swapped-in surroundings; none for the others
        logits = self(x.requires_grad_(True))
        loss = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
        own = F.log_softmax(logits.float(), dim=1).gather(1, y[:, None]).sum()
        (grad,) = torch.autograd.grad(own, x, create_graph=True)
        swapped = outside.flatten(1).any(dim=1)
        share = outside_share(grad, outside)
        penalty = share[swapped].mean() if swapped.any() else share.sum() * 0
        self._watch_loss(loss, last_of_epoch=batch_idx + 1 >= self.trainer.num_training_batches)
        self._tally(loss, logits, y)
        if batch_idx % 20 == 0:
            self.log("train/surroundings_share", penalty.detach())
        return loss + self.surroundings_penalty * penalty
