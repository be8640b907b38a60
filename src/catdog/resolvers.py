"""The resolvers the configs use: the fastest sound settings for this machine and trainer."""

from __future__ import annotations

import functools
from pathlib import Path

from omegaconf import OmegaConf

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


@functools.cache
def cpu_has_bf16() -> bool:
    """Native bf16 arithmetic (AVX512-BF16 or AMX): without it, bf16 autocast on a CPU is slower than fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def device_default(key: str):
    """``${device_default:precision}`` and friends: the fastest sound setting for this machine."""
    import torch  # imported here: composing a config should not pay for torch unless it asks

    gpu = torch.cuda.is_available()
    cpu_precision = "bf16-mixed" if cpu_has_bf16() else "32-true"
    values = {
        "precision": ("bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed") if gpu else cpu_precision,
        "cpu_precision": cpu_precision,
        "benchmark": gpu,
        "progress_refresh": 50 if gpu else 1,  # a refresh reads metrics back, waiting for the GPU
    }
    if key not in values:
        raise ValueError(f"device_default: unknown key {key!r}; known: {sorted(values)}")
    return values[key]


def compile_for(accelerator: str) -> bool:
    """``${compile_for:${trainer.accelerator}}``: torch.compile pays on a GPU; on the CPUs measured
    it loses (bench/RESULTS.md), so a CPU trainer, also on a machine with a GPU, runs eagerly."""
    import torch

    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


def optuna_direction(metric: str) -> str:
    """``${optuna_direction:${optimized_metric}}``: minimize a loss, maximize anything else (as the
    sweep summary sorts)."""
    return "minimize" if "loss" in metric else "maximize"


def register_resolvers() -> None:
    for name, fn in (("device_default", device_default), ("compile_for", compile_for), ("optuna_direction", optuna_direction)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
