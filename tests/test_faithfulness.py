"""Deletion and insertion curves (Petsiuk et al., RISE, 2018)."""

from __future__ import annotations

import pytest
import torch

from catdog.gradcam.faithfulness import _auc, blurred, deletion_insertion, pixel_ranks

SIZE = 32


class TextureNet(torch.nn.Module):
    """Says "class 1" when the top-left quarter holds fine texture, which blurring removes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float() / 255 if x.dtype == torch.uint8 else x
        s = 20 * ((x[:, :, : SIZE // 2, : SIZE // 2] - 0.5).abs().mean(dim=(1, 2, 3)) - 0.25)
        return torch.stack([-s, s], dim=1)


def checkerboard(n: int = 3) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    return (((ys + xs) % 2) * 255).to(torch.uint8).expand(n, 3, SIZE, SIZE).clone()


def test_a_map_on_the_evidence_deletes_fast_and_inserts_fast():
    images = checkerboard()
    on = torch.zeros(3, SIZE, SIZE)
    on[:, : SIZE // 2, : SIZE // 2] = 1.0
    net, cpu = TextureNet(), torch.device("cpu")
    d_on, i_on = deletion_insertion(net, images, on, cpu)
    d_off, i_off = deletion_insertion(net, images, 1 - on, cpu)
    d_flat, i_flat = deletion_insertion(net, images, torch.ones(3, SIZE, SIZE), cpu)
    assert (d_on < d_flat).all() and (d_flat < d_off).all(), (d_on, d_flat, d_off)
    assert (i_on > i_flat).all() and (i_flat > i_off).all(), (i_on, i_flat, i_off)
    assert d_on.max() < 0.3 and i_on.min() > 0.7


def test_ranks_order_by_the_map_and_break_ties_at_random_but_reproducibly():
    cams = torch.tensor([[[0.1, 0.9], [0.5, 0.5]]])
    ranks = pixel_ranks(cams, torch.Generator().manual_seed(0))
    assert ranks[0, 0, 1] == 0 and ranks[0, 0, 0] == 3 and set(ranks[0, 1].tolist()) == {1, 2}
    flat = torch.ones(4, 8, 8)
    a, b = pixel_ranks(flat, torch.Generator().manual_seed(0)), pixel_ranks(flat, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and not torch.equal(a[0], a[1])
    assert torch.equal(a[0].flatten().sort().values, torch.arange(64))


def test_area_and_blur():
    assert _auc(torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])).tolist() == pytest.approx([1.0, 0.25])
    soft = blurred(checkerboard(1))
    assert soft.dtype == torch.uint8 and (soft.float() - 127.5).abs().mean() < 40  # the texture is gone
    with pytest.raises(ValueError):
        deletion_insertion(TextureNet(), checkerboard(1), torch.ones(1, SIZE, SIZE), torch.device("cpu"), steps=1)
