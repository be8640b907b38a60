"""How every entry point runs its Hydra task: ``result.json`` in the run folder, one line and
exit code 2 for a UserError, and in a sweep a failed job that does not stop the others."""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import re
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Callable

from omegaconf import DictConfig, OmegaConf

from catdog.atomic_write import write_atomic
from catdog.command_line import check_value_kinds
from catdog.errors import UserError

log = logging.getLogger("catdog")


def is_multirun(config: DictConfig | None = None) -> bool:
    """Whether this job is one of a multirun (a sweep): from ``config``'s ``hydra.mode`` where a
    Hydra callback is handed one, else from the running job's Hydra config."""
    if config is None:
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():
            return False
        mode = HydraConfig.get().mode
    else:
        mode = OmegaConf.select(config, "hydra.mode", default=None)
    return str(getattr(mode, "name", mode)).upper() == "MULTIRUN"


def sweeper_records_failures() -> bool:
    """Whether this sweep's sweeper takes a job that raises as a failed trial and goes on
    (Optuna's, with ``max_failure_rate``); it cannot take NaN, which Hydra's basic sweeper gets
    instead, since one raising job would stop it."""
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.initialized() and "optuna" in str(HydraConfig.get().sweeper.get("_target_", "")).lower()


def _is_rank_zero() -> bool:
    """False in the other processes of a DDP run: Lightning re-runs the command in each rank, in
    rank zero's folder, and only rank zero may write that run's result.json. Where Lightning is
    loaded (train.py) its rank counts; eval, predict and cam never load it (4 s of start-up),
    and for them the launchers' variables that Lightning itself reads tell."""
    rank_zero = sys.modules.get("lightning.fabric.utilities.rank_zero")
    if rank_zero is not None:
        return getattr(rank_zero.rank_zero_only, "rank", 0) == 0
    return all(int(os.environ.get(k, 0) or 0) == 0 for k in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"))


RESULT = "result.json"


def _write_result(output_dir: str | None, result: dict) -> None:
    if output_dir and _is_rank_zero():
        try:
            Path(output_dir).mkdir(parents=True, exist_ok=True)
            write_atomic(Path(output_dir) / RESULT, json.dumps(result, indent=2, default=str))
        except OSError as err:  # a full disk: the run's own message matters more than this file
            log.warning("could not write %s/%s (%s)", output_dir, RESULT, err.strerror or err)


def read_result(run_dir: str | os.PathLike) -> dict | None:
    """A run's ``result.json``; None where there is none yet (running, killed) or it is unreadable."""
    try:
        result = json.loads((Path(run_dir) / RESULT).read_text())
    except (OSError, ValueError):
        return None
    return result if isinstance(result, dict) else None


def _user_error(err: BaseException) -> UserError | None:
    """The UserError behind ``err``: Hydra's instantiate wraps what a ``_target_`` raises (a
    network option that does not fit, say) in its own InstantiationException. Lightning's
    MisconfigurationException is its word for a setting it cannot take (``trainer.profiler.sort_by_key=``
    a key it does not know): a user's mistake too, named by the config key Hydra was building."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    key = re.search(r"full_key: (\S+)", str(err))
    while err is not None and not isinstance(err, UserError):
        if isinstance(err, MisconfigurationException):
            return UserError(f"{key.group(1)}: {err}" if key else str(err))
        err = err.__cause__
    return err


class _DropAdvert(logging.Filter):
    """Lightning's "💡 Tip: … try installing litlogger" on every run without its own cloud logger: an
    advert, not a finding about the run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip")


def quiet_library_noise() -> None:
    """Leave the console to what the run says: no advert, no deprecation inside Lightning that a user
    can do nothing about (its own pytree helper, on torch's newer API; its model summary in bf16), and no
    warning that a resumed run's checkpoint folder is a new one."""
    lightning_log = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropAdvert) for f in lightning_log.filters):  # once, however many sweep jobs
        lightning_log.addFilter(_DropAdvert())
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    # A resumed run writes to its own folder by design and says which run it continues.
    warnings.filterwarnings("ignore", message=r"The dirpath has changed from")
    # The CPU preset trains in bf16 where the CPU has it; the summary then only cannot size the model in MB.
    warnings.filterwarnings("ignore", message=r"Precision bf16-mixed is not supported by the model summary")


def hydra_task(fn: Callable[..., dict]) -> Callable[..., float]:
    """Wrap a Hydra task that returns ``{"metrics": {...}, "objective": float}``.

    Every run leaves ``result.json`` in its folder (status, metrics, error, run time), which the
    sweep summary reads. A UserError ends a single run with one line and its exit code (2; 28
    for a full disk); in a sweep, a failed job is logged and returns NaN (raises, for Optuna's
    sweeper, which records it as a failed trial), so the other jobs still run.
    """

    @functools.wraps(fn)
    def wrapper(cfg):
        from hydra.core.hydra_config import HydraConfig

        output_dir = HydraConfig.get().runtime.output_dir if HydraConfig.initialized() else None
        quiet_library_noise()
        start = time.time()
        try:
            check_value_kinds()
            result = fn(cfg)
        except Exception as caught:
            err = _user_error(caught) or caught
            user = isinstance(err, UserError)
            message = str(err) if user else f"{type(err).__name__}: {err}"
            _write_result(output_dir, {"status": "failed", "error": message, "run_time_s": time.time() - start})
            if is_multirun():
                log.error("job failed: %s%s", message, "" if user else "\n" + traceback.format_exc())
                if sweeper_records_failures():
                    raise
                return math.nan
            if user:
                print(f"error: {message}", file=sys.stderr, flush=True)
                sys.exit(err.exit_code)
            raise
        except (KeyboardInterrupt, SystemExit) as stop:  # Ctrl-C or SIGTERM: what was saved is said by the run
            code = 130 if isinstance(stop, KeyboardInterrupt) else stop.code
            _write_result(output_dir, {"status": "interrupted", "exit_code": code, "run_time_s": time.time() - start})
            raise
        _write_result(output_dir, {"status": "ok", "run_time_s": time.time() - start, **result})
        return result.get("objective", math.nan)

    return wrapper
