"""The exponential moving average of the weights that experiment=cpu validates, tests and saves.

Lightning's EMAWeightAveraging averages with a fixed decay from the first step, so a run shorter
than a few time constants (1 / (1 - decay) steps) validates weights still mostly from its start:
with decay 0.998, 83% of it after 90 steps (5 epochs on a few hundred photos). As
tf.train.ExponentialMovingAverage with ``num_updates``, the decay here is min(decay, (1 + n) / (10 + n))
after n updates: the average follows the weights closely at first and settles to ``decay`` (after
about 4,500 updates for 0.998, so long runs end as with a fixed one).
"""

from __future__ import annotations

from typing import Callable

import torch

from catdog.errors import UserError

AvgFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def warmed_up_ema(decay: float) -> AvgFn:
    """``avg_fn`` for torch's AveragedModel (and Lightning's WeightAveraging): (average, current, n) -> new average."""
    if not 0.0 <= decay < 1.0:
        raise UserError(f"the EMA's decay={decay} must lie in [0, 1)")

    def average(averaged: torch.Tensor, current: torch.Tensor, num_averaged: torch.Tensor) -> torch.Tensor:
        d = torch.clamp((1 + num_averaged) / (10 + num_averaged), max=decay)
        return averaged + (current - averaged) * (1 - d)

    return average
