"""Test helpers: compose the training config as src/train.py does, with outputs in a temp folder."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from catdog.config import CONF_DIR, register_resolvers

register_resolvers()

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


def run_train_main(argv: list[str], log_path: str, cwd: str) -> None:
    """The body of ``python src/train.py ARGV`` in a child process forked from a server that has
    imported torch and Lightning already: seconds saved per run. In its own session, so that a
    test-only SIGKILL of its process group takes down this run only; output goes to ``log_path``."""
    import os
    import sys

    os.setsid()
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.chdir(cwd)
    script = os.path.join(cwd, "src", "train.py")
    sys.argv = [script, *argv]
    import runpy

    runpy.run_path(script, run_name="__main__")  # as the command runs it: Hydra finds conf/ beside it
