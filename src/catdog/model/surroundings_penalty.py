"""A penalty on the input gradient that falls on surroundings known to say nothing of the label
(``model.surroundings_penalty``, off by default).

"Right for the right reasons" (Ross et al., 2017) penalises the input gradient where an annotation
says the evidence is not. Kaggle's photos have no masks, but the surroundings swap
(``model.augment.frame_swap``) makes its own: outside the kept box, a swapped image shows another
photo's pixels, which cannot be evidence for its label. The penalty is the share of the input gradient
of log p(label) (its magnitude, summed over pixels) that lies there, averaged over the swapped images:
scale-free (0 to 1), so its weight is weighed against the cross-entropy directly. The magnitude, not its
square as Ross et al.: a share of squares is small once the few largest gradients are off the
surroundings, while the maps' mass counts every pixel (five seeds each, bench/RESULTS.md session 36).

The gradient is taken with the network in evaluation mode, as Grad-CAM and the maps see it (BatchNorm's
running statistics, no dropout), on the swapped images only, in a forward pass of their own, each
BatchNorm written as the per-channel affine map it then is. Taken in training mode on the whole batch,
the second backward pass through BatchNorm's batch statistics took 18-20x the training time at 64 px on
2 CPU cores; in evaluation mode through torch's batch_norm 3.3x; so 2x (bench/RESULTS.md, sessions 34-36).
"""

from __future__ import annotations

import contextlib
import functools

import torch
import torch.nn.functional as F
from torch import nn

from catdog.data.augment import in_boxes
from catdog.gradcam.maps import evaluating


def outside_share(grad: torch.Tensor, outside: torch.Tensor) -> torch.Tensor:
    """(N,): the share of each image's gradient magnitude (|g| summed over channels) on ``outside`` (N, 1, H, W)."""
    energy = grad.float().abs().sum(dim=1, keepdim=True)
    return (energy * outside).sum(dim=(1, 2, 3)) / energy.sum(dim=(1, 2, 3)).clamp_min(1e-12)


def _affine_batch_norm(bn: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """What an evaluation-mode BatchNorm computes, as the per-channel affine map it is."""
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale + (bn.bias if bn.bias is not None else 0.0)
    shape = (1, -1) + (1,) * (x.dim() - 2)
    return x * scale.to(x.dtype).view(shape) + shift.to(x.dtype).view(shape)


@contextlib.contextmanager
def _batch_norms_as_affine(net: nn.Module):
    """Each BatchNorm with running statistics computes ``_affine_batch_norm`` for the duration: the numbers
    of its evaluation mode (up to rounding in bf16), whose double backward is two multiplications, where
    torch's batch_norm computes its training terms (batch sums) in either mode: over half the penalty's
    time at 64 px on 2 CPU cores."""
    patched = [m for m in net.modules()
               if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_var is not None and "forward" not in vars(m)]
    for m in patched:
        m.forward = functools.partial(_affine_batch_norm, m)
    try:
        yield
    finally:
        for m in patched:
            del m.forward


def surroundings_share(net: nn.Module, x: torch.Tensor, labels: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """The mean share of the input gradient of log p(label) outside the kept boxes ``keep`` ((N, 4), as
    ``DeviceAugment.Params.keep``) over the images whose surroundings were swapped; differentiable in the
    network's weights (a second backward pass). 0 when no image of the batch was swapped."""
    swapped = (keep[:, 2] - keep[:, 0]) < 1.0  # the others keep the whole image
    if not bool(swapped.any()):
        return x.new_zeros(())
    x, labels, keep = x[swapped].detach().requires_grad_(True), labels[swapped], keep[swapped]
    with evaluating(net), _batch_norms_as_affine(net):  # each module's own mode comes back after
        # forward(), not __call__: a network compiled in place (model.compile) cannot take the second
        # backward pass, and the eager forward shares its weights.
        log_p = F.log_softmax(net.forward(x).float(), dim=1)
    (grad,) = torch.autograd.grad(log_p.gather(1, labels[:, None]).sum(), x, create_graph=True)
    return outside_share(grad, (~in_boxes(keep, x)).to(grad.dtype)).mean()
