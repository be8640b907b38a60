"""One table for a whole sweep: ``summary.csv`` and ``summary.md`` in the sweep folder.

A Hydra callback (``hydra.callbacks.sweep_summary`` in conf/hydra/default.yaml). After every
job of a multirun it reads each job's ``result.json`` (written by ``catdog.task.hydra_task``:
status, metrics, error, run time) and rewrites both files, so a sweep that is interrupted still
leaves a summary of the jobs that finished. Rows are sorted best first by the sweep's optimized
metric (``optimized_metric`` in the config), failed jobs last with their error message.

At the end of the multirun the Markdown table is printed and, if any job failed, one line says
how many, and the command exits with status 1.

The files are rebuilt from what is on disk (under a file lock, written atomically), so the same
callback works when each job runs in its own process or on another machine, as with the
SLURM launcher: there ``on_job_end`` runs on the compute node, ``on_multirun_end`` on the
machine that submitted the sweep. Single runs are left alone.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from catdog.atomic_write import write_atomic
from catdog.resolvers import optuna_direction
from catdog.task import is_multirun, read_result

log = logging.getLogger(__name__)

DEFAULT_METRIC = "val/acc_best"
SHOWN_METRICS = ("val/acc_best", "test/acc")
# Overrides that say where things are, not what was trained: left out of the table.
NOISE_KEYS = ("data.root",)
NOISE_PREFIXES = ("hydra.", "paths.")


@dataclass
class JobRow:
    """One job of the sweep, as the summary shows it."""

    output_dir: str
    num: int | None = None
    overrides: list[str] = field(default_factory=list)
    status: str = "running"  # ok | failed | running (no result.json yet)
    metrics: dict[str, float] = field(default_factory=dict)
    run_time_s: float | None = None
    error: str = ""


def override_key(override: str) -> str:
    """``+a.b=1`` -> ``a.b``; ``~logger`` -> ``logger``."""
    return override.lstrip("+~").split("=", 1)[0]


def is_noise(override: str) -> bool:
    key = override_key(override)
    return key in NOISE_KEYS or key.startswith(NOISE_PREFIXES)


def _number(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


class SweepSummary(Callback):
    """Writes ``summary.csv`` and ``summary.md`` into the sweep folder after each job of a multirun.

    ``mode``: ``max`` or ``min`` for the optimized metric; null guesses from its name (``min``
    for a loss, else ``max``). ``exit_on_failure``: end the multirun with exit status 1 when
    any job failed (after printing the table).
    """

    def __init__(self, mode: str | None = None, exit_on_failure: bool = True) -> None:
        if mode not in (None, "max", "min"):
            raise ValueError(f"SweepSummary: mode={mode!r} must be 'max', 'min' or null")
        self.mode, self.exit_on_failure = mode, exit_on_failure
        self._seen: dict[str, JobRow] = {}  # jobs finished in this process: used where .hydra/ is off

    # -- Hydra's hooks ---------------------------------------------------------------------

    def on_job_end(self, config: DictConfig, job_return: Any = None, **kwargs: Any) -> None:
        if not is_multirun(config):
            return  # a single run: nothing to summarise
        output_dir = str(OmegaConf.select(config, "hydra.runtime.output_dir"))
        row = self._read_job(Path(output_dir))
        num = _number(OmegaConf.select(config, "hydra.job.num", default=None))
        row.num = row.num if num is None else int(num)
        row.overrides = [str(o) for o in OmegaConf.select(config, "hydra.overrides.task", default=[]) or []]
        if row.status == "running" and job_return is not None:  # the task wrote no result.json
            row = self._from_job_return(row, job_return)
        self._seen[output_dir] = row
        try:
            self.write(self.sweep_dir(config, output_dir), self.metric(config))
        except OSError as err:
            log.warning("could not write the sweep summary: %s", err)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = self.sweep_dir(config)
        if not sweep_dir.is_dir():
            return
        rows = self.write(sweep_dir, self.metric(config), final=True)
        if not rows:
            return
        print(self.markdown(rows, self.metric(config), sweep_dir), flush=True)
        failed = sum(r.status != "ok" for r in rows)
        if failed:
            print(f"{failed} of {len(rows)} jobs failed: see {sweep_dir / 'summary.md'}", file=sys.stderr, flush=True)
            if self.exit_on_failure:
                sys.exit(1)

    # -- where, and what to sort by --------------------------------------------------------

    @staticmethod
    def sweep_dir(config: DictConfig, output_dir: str | None = None) -> Path:
        sweep = Path(os.path.abspath(str(OmegaConf.select(config, "hydra.sweep.dir"))))
        if output_dir is not None and Path(output_dir) != sweep and sweep not in Path(output_dir).parents:
            return Path(output_dir).parent  # the sweep folder was not the job's parent: the job knows best
        return sweep

    @staticmethod
    def metric(config: DictConfig) -> str:
        return str(OmegaConf.select(config, "optimized_metric", default=None) or DEFAULT_METRIC)

    def _mode(self, metric: str) -> str:
        return self.mode or ("min" if optuna_direction(metric) == "minimize" else "max")

    # -- reading the jobs ------------------------------------------------------------------

    @staticmethod
    def _read_job(job_dir: Path) -> JobRow:
        row = JobRow(output_dir=str(job_dir))
        hydra_dir = job_dir / ".hydra"
        try:
            row.overrides = [str(o) for o in yaml.safe_load((hydra_dir / "overrides.yaml").read_text()) or []]
        except (OSError, yaml.YAMLError):
            pass
        match = re.match(r"(\d+)(?:_|$)", job_dir.name)
        row.num = int(match.group(1)) if match else None
        result = read_result(job_dir)
        if result is None:
            return row  # not finished yet, or the job never got to write it
        row.status = "ok" if result.get("status") == "ok" else "failed"
        row.metrics = {k: v for k, v in ((k, _number(v)) for k, v in (result.get("metrics") or {}).items()) if v is not None}
        row.run_time_s = _number(result.get("run_time_s"))
        row.error = str(result.get("error") or "")
        return row

    @staticmethod
    def _from_job_return(row: JobRow, job_return: Any) -> JobRow:
        status = getattr(getattr(job_return, "status", None), "name", "")
        if status == "FAILED":
            err = job_return._return_value
            row.status, row.error = "failed", f"{type(err).__name__}: {err}"
        elif status == "COMPLETED":
            row.status = "ok"
        return row

    def collect(self, sweep_dir: Path, final: bool = False) -> list[JobRow]:
        """Every job folder under ``sweep_dir`` (those with ``.hydra/`` or ``result.json``), plus
        the jobs this process saw finish. With ``final``, a job without a result has failed."""
        dirs = {p.parent.parent for p in sweep_dir.glob("**/.hydra/overrides.yaml")}
        dirs |= {p.parent for p in sweep_dir.glob("**/result.json")}
        rows = {str(d): self._read_job(d) for d in dirs if not any(part.startswith(".") for part in d.relative_to(sweep_dir).parts)}
        for output_dir, seen in self._seen.items():
            if Path(output_dir) == sweep_dir or sweep_dir in Path(output_dir).parents:
                current = rows.get(output_dir)
                if current is None or current.status == "running":
                    rows[output_dir] = seen
                else:
                    current.num = seen.num if seen.num is not None else current.num
                    current.overrides = current.overrides or seen.overrides
        out = list(rows.values())
        if final:
            for row in out:
                if row.status == "running":
                    row.status, row.error = "failed", "no result.json: the job did not finish (killed, or out of time?)"
        return out

    def sort(self, rows: list[JobRow], metric: str) -> list[JobRow]:
        sign = -1.0 if self._mode(metric) == "max" else 1.0

        def key(row: JobRow):
            value = row.metrics.get(metric)
            has_value = value is not None and not math.isnan(value)
            order = {"ok": 0, "running": 1}.get(row.status, 2)
            return (order, not has_value, sign * value if has_value else 0.0, row.num if row.num is not None else math.inf, row.output_dir)

        return sorted(rows, key=key)

    # -- writing ---------------------------------------------------------------------------

    def columns(self, metric: str) -> list[str]:
        return list(SHOWN_METRICS) + ([metric] if metric not in SHOWN_METRICS else [])

    def write(self, sweep_dir: Path, metric: str, final: bool = False) -> list[JobRow]:
        from filelock import FileLock

        with FileLock(str(sweep_dir / ".summary.lock")):
            rows = self.sort(self.collect(sweep_dir, final=final), metric)
            if rows:
                write_atomic(sweep_dir / "summary.csv", self.csv(rows, metric))
                write_atomic(sweep_dir / "summary.md", self.markdown(rows, metric, sweep_dir))
        return rows

    def csv(self, rows: list[JobRow], metric: str) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        metrics = self.columns(metric)
        writer.writerow(["rank", "job", "overrides", *metrics, "run_time_s", "status", "error", "output_dir"])
        for rank, row in enumerate(rows, 1):
            values = [_plain(row.metrics.get(m)) for m in metrics]
            writer.writerow([rank, "" if row.num is None else row.num, " ".join(_shown(row.overrides)), *values,
                             _plain(row.run_time_s), row.status, row.error, row.output_dir])
        return buffer.getvalue()

    def markdown(self, rows: list[JobRow], metric: str, sweep_dir: Path) -> str:
        metrics = self.columns(metric)
        varying, common = _split_overrides([_shown(r.overrides) for r in rows])
        failed = sum(r.status == "failed" for r in rows)
        running = sum(r.status == "running" for r in rows)
        counts = f"{len(rows) - failed - running} ok, {failed} failed" + (f", {running} running" if running else "")
        lines = [f"# Sweep summary: {sweep_dir}", "",
                 f"{len(rows)} jobs ({counts}), best first by `{metric}` ({self._mode(metric)}).", ""]
        if common:
            lines += ["Common to all jobs: " + " ".join(f"`{o}`" for o in common), ""]
        header = ["rank", "job", "overrides", *metrics, "time (s)", "status"] + (["error"] if failed else [])
        lines += ["| " + " | ".join(header) + " |", "|" + "|".join(["---:", "---:", "---"] + ["---:"] * (len(metrics) + 1) + ["---"] * (1 + bool(failed))) + "|"]
        for rank, (row, shown) in enumerate(zip(rows, varying), 1):
            cells = [str(rank), "" if row.num is None else str(row.num), " ".join(shown)]
            cells += [_fmt(row.metrics.get(m)) for m in metrics]
            cells += [_fmt(row.run_time_s, 1), row.status] + ([row.error] if failed else [])
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
        return "\n".join(lines) + "\n"


def _shown(overrides: list[str]) -> list[str]:
    return [o for o in overrides if not is_noise(o)]


def _split_overrides(per_row: list[list[str]]) -> tuple[list[list[str]], list[str]]:
    """Each row's overrides that differ between jobs, and those common to all (one job: all vary)."""
    if len(per_row) < 2:
        return per_row, []
    common = [o for o in per_row[0] if all(o in row for row in per_row[1:])]
    return [[o for o in row if o not in common] for row in per_row], common


def _plain(value: float | None) -> str:
    return "" if value is None else repr(float(value))


def _fmt(value: float | None, digits: int = 4) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")
