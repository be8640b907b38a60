"""One exception type for mistakes a user can fix, and how entry points report failures."""

from __future__ import annotations

import functools
import json
import logging
import math
import sys
import time
import traceback
from pathlib import Path
from typing import Callable

log = logging.getLogger("catdog")


class UserError(Exception):
    """A wrong path, a bad override, a checkpoint from another config: say what to do, no traceback."""

    exit_code = 2


class DiskFullError(UserError):
    """The disk filled up while the run was writing: what was saved before is kept. Its own exit
    code (ENOSPC's number) lets a scheduler tell it from a mistake in the command."""

    exit_code = 28


def _multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _is_rank_zero() -> bool:
    """False in the other processes of a DDP run: Lightning re-runs the command in each rank, in
    rank zero's folder, and only rank zero may write that run's result.json."""
    from lightning.fabric.utilities.rank_zero import rank_zero_only  # set from LOCAL_RANK etc., then by the strategy

    return getattr(rank_zero_only, "rank", 0) == 0


def _write_result(output_dir: str | None, result: dict) -> None:
    if output_dir and _is_rank_zero():
        try:
            Path(output_dir).mkdir(parents=True, exist_ok=True)
            (Path(output_dir) / "result.json").write_text(json.dumps(result, indent=2, default=str))
        except OSError as err:  # a full disk: the run's own message matters more than this file
            log.warning("could not write %s/result.json (%s)", output_dir, err.strerror or err)


def hydra_task(fn: Callable[..., dict]) -> Callable[..., float]:
    """Wrap a Hydra task that returns ``{"metrics": {...}, "objective": float}``.

    Every run leaves ``result.json`` in its folder (status, metrics, error, run time), which the
    sweep summary reads. A UserError ends a single run with one line and its exit code (2; 28
    for a full disk); in a sweep, a failed job is logged and returns NaN, so the other jobs
    still run.
    """

    @functools.wraps(fn)
    def wrapper(cfg):
        from hydra.core.hydra_config import HydraConfig

        output_dir = HydraConfig.get().runtime.output_dir if HydraConfig.initialized() else None
        start = time.time()
        try:
            result = fn(cfg)
        except Exception as err:
            user = isinstance(err, UserError)
            message = str(err) if user else f"{type(err).__name__}: {err}"
            _write_result(output_dir, {"status": "failed", "error": message, "run_time_s": time.time() - start})
            if _multirun():
                log.error("job failed: %s%s", message, "" if user else "\n" + traceback.format_exc())
                return math.nan
            if user:
                print(f"error: {message}", file=sys.stderr, flush=True)
                sys.exit(err.exit_code)
            raise
        _write_result(output_dir, {"status": "ok", "run_time_s": time.time() - start, **result})
        return result.get("objective", math.nan)

    return wrapper
