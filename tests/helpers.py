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


def run_cli(script: str, *args: str, timeout: int = 300, cwd: Path = ROOT, test_modules: bool = False,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python src/<script>.py args...`` as a user runs it, with ``env`` added to the environment;
    ``test_modules``: the test-only callbacks of tests/ (killer.py) importable by ``_target_``. A
    hang fails the test."""
    env = {**os.environ, **(env or {}), **({"PYTHONPATH": str(TESTS)} if test_modules else {})}
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


def write_oxford_pets(root: Path, n_per_species: int = 4, size: int = 48, heads: bool = True) -> Path:
    """A small folder in Oxford-IIIT Pet's own layout, with its quirks: per image a bright square
    "animal" on a dark background, its trimap (1 inside, 3 on the outline band, 2 outside), a
    head box (VOC xml) for all but the last image; a .mat file among the images, a listed image
    that is missing, an image no list names, and a PNG named .jpg."""
    images, trimaps, xmls = root / "images", root / "annotations" / "trimaps", root / "annotations" / "xmls"
    for d in (images, trimaps, xmls):
        d.mkdir(parents=True, exist_ok=True)
    lines = []
    names = [(f"Persian_{i}", 1) for i in range(1, n_per_species + 1)] + [(f"beagle_{i}", 2) for i in range(1, n_per_species + 1)]
    for k, (name, species) in enumerate(names):
        w, h = size + 8 * (k % 3), size  # not square: masks must be squashed like the images
        x0, y0 = (k * 5) % (w // 2), (k * 3) % (h // 2)
        x1, y1 = x0 + w // 2, y0 + h // 2
        pixels = Image.new("RGB", (w, h), (20, 20, 20))
        pixels.paste((230, 200, 60) if species == 1 else (60, 200, 230), (x0, y0, x1, y1))
        pixels.save(images / f"{name}.jpg", format="PNG" if k == 1 else "JPEG")
        trimap = Image.new("L", (w, h), 2)
        trimap.paste(3, (x0, y0, x1, y1))
        trimap.paste(1, (x0 + 1, y0 + 1, x1 - 1, y1 - 1))
        trimap.save(trimaps / f"{name}.png")
        if heads and k < len(names) - 1:
            (xmls / f"{name}.xml").write_text(
                f"<annotation><size><width>{w}</width><height>{h}</height><depth>3</depth></size><object><name>x</name>"
                f"<bndbox><xmin>{x0 + 1}</xmin><ymin>{y0 + 1}</ymin><xmax>{x0 + w // 4}</xmax><ymax>{y0 + h // 4}</ymax>"
                "</bndbox></object></annotation>")
        lines.append(f"{name} {k + 1} {species} {k + 1}")
    (images / "Persian_1.mat").write_bytes(b"MATLAB 5.0 MAT-file")
    write_image(images / "unlisted_1.jpg")
    lines.append("missing_1 40 2 12")
    (root / "annotations" / "trainval.txt").write_text("\n".join(lines) + "\n")
    return root
