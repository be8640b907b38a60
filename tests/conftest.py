"""Shared fixtures: small image folders in both layouts, the real Kaggle sample when present,
and Hydra configs composed the way src/train.py composes them."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from helpers import ROOT, TINY, compose_train

KAGGLE_SAMPLE = ROOT.parent / "shared" / "data" / "dogs-vs-cats-200px"

os.environ.setdefault("PYTHONHASHSEED", "0")


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """The built-in data set, small: 48 cats and 48 dogs at 64 px, in Kaggle's flat layout."""
    from catdog.data.synthetic import generate

    return generate(tmp_path_factory.mktemp("synthetic"), n_per_class=48, size=64, seed=0)


@pytest.fixture(scope="session")
def trained(tmp_path_factory, synthetic_root) -> dict:
    """One epoch at 32 px on the built-in set: its last.ckpt, and the network rebuilt from it."""
    from catdog.model.checkpoint_load import load_checkpoint, net_from_checkpoint
    from train import train

    out = tmp_path_factory.mktemp("trained")
    fast = ["~logger", "~callbacks.lr_monitor", "callbacks.gradcam=null", "test=false"]
    train(compose_train(out, [f"data.root={synthetic_root}", *TINY, *fast]))
    ckpt_path = out / "run" / "checkpoints" / "last.ckpt"
    net = net_from_checkpoint(load_checkpoint(ckpt_path))
    return {"ckpt": ckpt_path, "output_root": out, "net": net, "root": synthetic_root}


@pytest.fixture
def kaggle_sample() -> Path:
    if not (KAGGLE_SAMPLE / "train").is_dir():
        pytest.skip(f"the real Kaggle sample is not here ({KAGGLE_SAMPLE}): it lives beside the project in ../shared")
    return KAGGLE_SAMPLE


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
