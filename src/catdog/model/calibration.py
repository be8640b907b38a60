"""Temperature scaling (Guo et al., "On Calibration of Modern Neural Networks", ICML 2017): one
number T that divides the class scores before the softmax, fitted to minimise the log loss on the
validation split. Every prediction stays what it was (so do the accuracy and the Grad-CAM maps,
which are normalised); only the probabilities change, to mean what they say: an overconfident
model (T > 1) is made less sure, an underconfident one (T < 1) more.

Written here rather than taken from a library: torchmetrics measures calibration but fits
nothing, and a one-parameter convex fit is a few lines (a golden-section search needs no
autograd, so it runs inside Lightning's inference-mode validation hooks).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# T is kept within these: on a validation split the model classifies without a mistake the log
# loss falls on as T does, towards 0, and a test photo it gets wrong would then cost without bound.
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.05, 20.0


def scaled(log_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """(B, classes) log-probabilities with their scores divided by ``temperature`` (1: as they are)."""
    return log_probs if temperature == 1.0 else (log_probs / temperature).log_softmax(dim=1)


def fit_temperature(log_probs: torch.Tensor, targets: torch.Tensor, iterations: int = 60) -> float:
    """The T in [MIN_TEMPERATURE, MAX_TEMPERATURE] whose ``scaled(log_probs, T)`` has the lowest log
    loss on ``targets``. The log loss is convex in 1 / T, so it has one minimum along log T: a
    golden-section search over log T finds it to a relative 1e-10 of the range in 60 steps."""
    log_p, y = log_probs.detach().double().cpu(), targets.detach().long().cpu()
    if len(y) == 0:
        return 1.0

    def loss(log_t: float) -> float:
        return float(F.nll_loss(scaled(log_p, math.exp(log_t)), y))

    lo, hi = math.log(MIN_TEMPERATURE), math.log(MAX_TEMPERATURE)
    ratio = (math.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = loss(a), loss(b)
    for _ in range(iterations):
        if fa <= fb:  # the minimum lies in [lo, b]
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = loss(a)
        else:  # in [a, hi]
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = loss(b)
    return math.exp((lo + hi) / 2)
