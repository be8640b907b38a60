"""Test helpers: the repository's paths, configs composed as src/train.py composes them (outputs
in a temp folder), the entry points run as a user runs them, and their CSV files read back."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict
from PIL import Image

from catdog.model.image_input import ImageInput
from catdog.resolvers import CONF_DIR, register_resolvers

register_resolvers()

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"

TINY = [  # a few seconds of CPU training: tiny images, small batches, one or two epochs
    "data.image_size=32",
    "data.batch_size=16",
    "data.num_workers=0",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "trainer.precision=32-true",
    "model.compile=false",
]


def compose_train(tmp_path: Path, overrides: list[str], config_name: str = "train") -> DictConfig:
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name, overrides=[f"paths.output_root={tmp_path}", *overrides])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
    return cfg


def run_cli(script: str, *args: str, timeout: int = 300, cwd: Path = ROOT, test_modules: bool = False) -> subprocess.CompletedProcess:
    """``python src/<script>.py args...`` as a user runs it; ``test_modules``: the test-only
    callbacks of tests/ (killer.py) importable by ``_target_``. A hang fails the test."""
    env = {**os.environ, "PYTHONPATH": str(TESTS)} if test_modules else None
    try:
        return subprocess.run([sys.executable, str(ROOT / "src" / f"{script}.py"), *args], cwd=cwd,
                              capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail(f"hang: {script}.py {' '.join(args)} ran longer than {timeout} s")


def write_image(path: Path, size=(40, 30), color=(200, 30, 30), mode="RGB", fmt=None) -> Path:
    """A one-colour image file (any Pillow mode and format), its folders made."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color if mode == "RGB" else 128).save(path, format=fmt)
    return path


def read_csv(path: Path, records: bool = False) -> list:
    """The rows of a CSV file as lists of strings, or with ``records`` as dicts by the header."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f) if records else csv.reader(f))


class TinyNet(torch.nn.Module):
    """Another network than SimpleCNN, for the tests that plug one in: the same input contract
    (``ImageInput``), one conv layer, global average pooling, one output per class."""

    def __init__(self, classes: list[str], width: int = 8) -> None:
        super().__init__()
        self.input = ImageInput()
        self.conv = torch.nn.Conv2d(3, width, 3, padding=1)
        self.act = torch.nn.ReLU()
        self.head = torch.nn.Linear(width, len(classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.act(self.conv(self.input(x))).mean(dim=(2, 3)))


def run_train_main(argv: list[str], log_path: str, cwd: str) -> None:
    """The body of ``python src/train.py ARGV`` in a child process forked from a server that has
    imported torch and Lightning already: seconds saved per run. In its own session, so that a
    test-only SIGKILL of its process group takes down this run only; output goes to ``log_path``."""
    import runpy

    os.setsid()
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.chdir(cwd)
    script = os.path.join(cwd, "src", "train.py")
    sys.argv = [script, *argv]
    runpy.run_path(script, run_name="__main__")  # as the command runs it: Hydra finds conf/ beside it
