"""What the configs need from code: device-dependent defaults, and plain-data views of a config."""

from __future__ import annotations

import functools
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

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
        "compile": gpu,
        "benchmark": gpu,
        "progress_refresh": 50 if gpu else 1,  # a refresh reads metrics back, waiting for the GPU
    }
    if key not in values:
        raise ValueError(f"device_default: unknown key {key!r}; known: {sorted(values)}")
    return values[key]


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("device_default"):
        OmegaConf.register_new_resolver("device_default", device_default)


def flat_params(cfg: DictConfig, skip=("paths", "callbacks", "logger", "hydra", "model.optimizer", "model.scheduler")) -> dict[str, float | int | str | bool]:
    """The config as ``{"optimizer.lr": 0.001, ...}`` scalars, for TensorBoard's HParams tab."""
    out: dict = {}

    def walk(node, prefix: str) -> None:
        for key, value in node.items():
            name = f"{prefix}{key}"
            if str(key).startswith("_") or name in skip:
                continue
            if isinstance(value, DictConfig):
                walk(value, name + ".")
            elif isinstance(value, ListConfig):
                out[name] = str(OmegaConf.to_container(value))
            elif value is None:
                out[name] = "null"
            elif isinstance(value, (int, float, str, bool)):
                out[name] = value

    walk(OmegaConf.create(OmegaConf.to_container(cfg, resolve=True)), "")
    return out
