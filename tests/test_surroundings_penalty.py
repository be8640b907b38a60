"""model.surroundings_penalty: the share of the input gradient on the swapped-in surroundings, what
descending it does, and a run with it (its setting errors: test_train's one-line user errors)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from catdog.data.augment import in_boxes
from catdog.model.surroundings_penalty import outside_share, surroundings_share
from helpers import TINY, compose_train
from train import train

CENTRE = torch.tensor([0.25, 0.25, 0.75, 0.75])  # a kept box: the middle half of the side
WHOLE = torch.tensor([0.0, 0.0, 1.0, 1.0])  # not swapped


class Region(nn.Module):
    """Two class scores from the pixels of one region only (rows and columns ``rows``), BatchNorm before."""

    def __init__(self, rows: slice) -> None:
        super().__init__()
        self.rows, self.bn = rows, nn.BatchNorm2d(3)

    def forward(self, x):
        s = self.bn(x)[:, :, self.rows, self.rows].pow(2).sum(dim=(1, 2, 3))
        return torch.stack([s, -s], dim=1)


def test_outside_share_is_the_share_of_the_gradient_magnitude_summed_over_channels():
    grad = torch.zeros(3, 3, 4, 4)
    grad[0, :, :2] = 1.0  # image 0: its gradient in the top half only
    grad[1] = 2.0  # image 1: everywhere alike
    grad[2, 0, :2], grad[2, 1, 2:] = -2.0, 1.0  # image 2: twice the magnitude on top, one sign negative
    outside = torch.zeros(3, 1, 4, 4)
    outside[:, :, :2] = 1.0  # the top half is the swapped-in surroundings
    assert torch.allclose(outside_share(grad, outside), torch.tensor([1.0, 0.5, 2 / 3]))  # squares would give 0.8


def test_the_share_counts_the_swapped_images_only_and_sees_where_the_network_looks():
    x, y = torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 0, 1])
    keep = torch.stack([CENTRE, CENTRE, WHOLE, WHOLE])
    corner, middle = Region(slice(0, 2)), Region(slice(3, 5))  # rows/columns 0-1 lie outside the box, 3-4 inside
    assert surroundings_share(corner, x, y, keep).item() == pytest.approx(1.0)
    assert surroundings_share(middle, x, y, keep).item() == pytest.approx(0.0, abs=1e-6)
    assert surroundings_share(corner, x, y, torch.stack([WHOLE] * 4)).item() == 0.0  # nothing swapped


def test_the_gradient_is_taken_as_the_maps_see_it_and_training_mode_comes_back():
    net = Region(slice(0, 2))
    net.bn.running_mean.fill_(0.5)
    x, y, keep = torch.rand(2, 3, 8, 8), torch.tensor([0, 1]), torch.stack([CENTRE, CENTRE])
    share = surroundings_share(net, x, y, keep)
    assert net.training and torch.equal(net.bn.running_mean, torch.full((3,), 0.5))  # eval mode: stats untouched
    share.backward()
    assert net.bn.weight.grad is not None  # a second backward pass reaches the weights


def test_batch_norm_taken_as_its_affine_map_changes_neither_the_share_nor_its_gradient():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 2))
    bn = net[1]
    with torch.no_grad():  # statistics and an affine part far from the identity
        bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2), bn.weight.uniform_(0.5, 1.5), bn.bias.uniform_(-1, 1)
    x, y, keep = torch.rand(3, 3, 8, 8), torch.tensor([0, 1, 0]), torch.stack([CENTRE] * 3)
    share = surroundings_share(net, x, y, keep)
    got = torch.autograd.grad(share, list(net.parameters()))
    assert "forward" not in vars(bn)  # torch's own batch_norm again

    net.eval()  # the reference: the share through torch's evaluation-mode batch_norm
    x = x.requires_grad_(True)
    (grad,) = torch.autograd.grad(F.log_softmax(net(x), dim=1).gather(1, y[:, None]).sum(), x, create_graph=True)
    reference = outside_share(grad, (~in_boxes(keep, x)).float()).mean()
    assert share.item() == pytest.approx(reference.item(), rel=1e-5)
    for g, want in zip(got, torch.autograd.grad(reference, list(net.parameters()))):
        assert torch.allclose(g, want, rtol=1e-4, atol=1e-7)


def test_descending_the_penalty_moves_the_gradient_off_the_surroundings():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 16 * 16, 2))
    x, y, keep = torch.rand(16, 3, 16, 16), torch.randint(0, 2, (16,)), CENTRE.expand(16, 4)
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    before = surroundings_share(net, x, y, keep).item()
    for _ in range(40):
        opt.zero_grad()
        surroundings_share(net, x, y, keep).backward()
        opt.step()
    after = surroundings_share(net, x, y, keep).item()
    assert before > 0.5 and after < before / 3, (before, after)  # the surroundings are 3/4 of the area


@pytest.mark.parametrize("mixing", [[], ["model.mixup=0.2", "model.cutmix=1.0"]], ids=["plain", "mixup-cutmix"])
def test_a_run_with_the_penalty_trains_and_reports_the_share_it_leaves(tmp_path, synthetic_root, mixing):
    result = train(compose_train(tmp_path, [f"data.root={synthetic_root}", *TINY, "model.surroundings_penalty=1.0",
                                            "model.augment.frame_swap=1.0", *mixing]))
    assert 0.0 < result["metrics"]["train/surroundings_share"] < 1.0
