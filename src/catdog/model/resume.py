"""What ``ckpt_path=last`` resumes, and how a resumed run differs from the run it continues.

Every training run marks its folder with ``run.json`` when it starts (its start time, and its
job's name when it is a sweep job). ``last`` is then the ``checkpoints/last.ckpt`` of:

- a single run: the newest other single run under ``paths.output_root``;
- a sweep job: the job of the same name (``<n>_<overrides>``) in the newest earlier sweep;
- eval, predict and cam: the newest training run, single or sweep job;
- first of all, the run's own folder, when it has one: a job requeued into the same folder
  (``hydra.run.dir=outputs/runs/$SLURM_JOB_ID``) continues itself.

Runs that stopped with an error before their first save (``result.json`` says "failed") never
trained, so ``last`` passes over them. Where the run it means has no ``last.ckpt`` (killed before its first save),
one line says so and names the newest such run that has one, with the override that resumes
it: a run is never continued silently in place of a newer one. Folders from before run.json
count too, dated by their Hydra or checkpoints folder. A checkpoint whose network has another
shape than the run's is refused in one line naming the settings that continue it.
"""

from __future__ import annotations

import inspect
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from catdog.atomic_write import write_atomic
from catdog.command_line import as_typed
from catdog.errors import UserError
from catdog.model.simple_cnn import SimpleCNN
from catdog.task import read_result

MARK = "run.json"
ANY_JOB = "*"  # find_last(job=ANY_JOB): single runs and sweep jobs alike
UNSET = "(unset)"  # a setting one of two configs lacks


@dataclass(frozen=True)
class Run:
    folder: Path
    started: float
    job: str | None  # the sweep job's folder name; None for a single run

    @property
    def last(self) -> Path:
        return self.folder / "checkpoints" / "last.ckpt"

    @property
    def failed_unsaved(self) -> bool:
        """Stopped with an error (a wrong setting, unreadable data) before its first checkpoint."""
        if self.last.is_file():
            return False
        return (read_result(self.folder) or {}).get("status") == "failed"  # no result: killed, or still running


def mark_run(folder: str | os.PathLike, job: str | None) -> None:
    """Record that a training run starts in ``folder`` (once: DDP ranks re-run the command there)."""
    path = Path(folder) / MARK
    if path.exists():
        return
    write_atomic(path, json.dumps({"task": "train", "started": time.time(), "job": job}))  # whole or absent


def _read_run(folder: Path) -> Run | None:
    try:
        info = json.loads((folder / MARK).read_text())
        return Run(folder, float(info["started"]), info.get("job")) if info.get("task") == "train" else None
    except (OSError, ValueError, KeyError, TypeError):
        pass
    if not (folder / "checkpoints").is_dir():  # neither marked nor an older training run
        return None
    dated = folder / ".hydra" if (folder / ".hydra").is_dir() else folder / "checkpoints"
    in_sweep = (folder.parent / "multirun.yaml").is_file()
    return Run(folder, dated.stat().st_mtime, folder.name if in_sweep else None)


def training_runs(output_root: str | os.PathLike) -> list[Run]:
    """Every training run under ``output_root``, oldest first."""
    folders = {p.parent for p in Path(output_root).glob(f"**/{MARK}")}
    folders |= {p.parent for p in Path(output_root).glob("**/checkpoints") if p.is_dir()}
    runs = [run for run in map(_read_run, folders) if run is not None]
    return sorted(runs, key=lambda r: r.started)


def find_last(output_root: str | os.PathLike, current: str | os.PathLike | None = None, job: str | None = None) -> Path:
    """The ``last.ckpt`` that ``ckpt_path=last`` means for a run in ``current`` (see the module)."""
    current = Path(current).resolve() if current else None
    if current is not None and (current / "checkpoints" / "last.ckpt").is_file():
        return current / "checkpoints" / "last.ckpt"  # this run's own earlier life (a job requeued into its folder)
    runs = [r for r in training_runs(output_root)
            if r.folder.resolve() != current and job in (ANY_JOB, r.job) and not r.failed_unsaved]
    sweep = job not in (None, ANY_JOB)
    use = "continue" if current is not None else "use"  # a training run resumes it; eval, predict and cam read it
    if not runs:
        where = f"no earlier sweep under {output_root}/ has a job named {job}" if sweep else f"no earlier training run under {output_root}/"
        raise UserError(f"ckpt_path=last: {where} to {use}; train first, or give a path")
    newest = runs[-1]
    if newest.last.is_file():
        return newest.last
    saved = [r for r in runs if r.last.is_file()]
    what = "run of this job" if sweep else "run"
    hint = (f"the newest {what} that has one is {saved[-1].folder}: to {use} it, give ckpt_path={saved[-1].last}"
            if saved else f"no earlier {what} has one either: start without ckpt_path")
    raise UserError(f"ckpt_path=last: the newest {'earlier ' if sweep else ''}{what}, {newest.folder}, has no checkpoints/last.ckpt "
                    f"(it stopped before its first save: killed?); {hint}")


def check_resumable(path: str | os.PathLike, ckpt: dict) -> None:
    """Only a ``last.ckpt`` carries the optimizer and loop state a run continues from; the best epoch's
    checkpoint (weights only) or a bare state_dict is refused in one line, naming the file that resumes."""
    if "optimizer_states" in ckpt and "loops" in ckpt:
        return
    last = Path(path).parent / "last.ckpt"
    where = f"resume from ckpt_path={last}" if last.is_file() else "resume from its run's checkpoints/last.ckpt"
    raise UserError(f"ckpt_path={path} holds the weights only, not the training state a run continues from: {where}, "
                    "or score it with src/eval.py")


def _epochs_trained(ckpt: dict) -> int:
    """Epochs the checkpoint's run finished, counted as Lightning's fit loop counts them (its "epoch"
    key is the 0-based index of the epoch it was saved in): one count for every message."""
    progress = ((ckpt.get("loops") or {}).get("fit_loop") or {}).get("epoch_progress") or {}
    return (progress.get("current") or {}).get("processed", ckpt.get("epoch", -1) + 1)


def _epochs(n: int) -> str:
    return f"{n} epoch" + ("" if n == 1 else "s")


def check_trains_further(path: str | os.PathLike, ckpt: dict, max_epochs: object) -> None:
    """Refuse to resume a run that already reached ``max_epochs``: Lightning would train nothing, and the
    new run folder would hold no checkpoint."""
    done = _epochs_trained(ckpt)
    if isinstance(max_epochs, int) and 0 < max_epochs <= done:
        raise UserError(f"ckpt_path={path} has already trained {_epochs(done)}, trainer.max_epochs={max_epochs}: "
                        f"raise trainer.max_epochs to train it further (src/eval.py scores it as it is)")


def _changes(stored: DictConfig | None, cfg: DictConfig) -> list[tuple[str, object, object]]:
    """``(key, checkpoint's value, this run's)`` for every setting the run changes (paths inside
    the two run folders, which always differ, left out)."""
    from catdog.hparams import flat_params

    if not stored:
        return []
    before, now = flat_params(stored), flat_params(cfg)
    old_dir, new_dir = str((stored.get("paths") or {}).get("output_dir") or "\0"), str(cfg.paths.output_dir)

    def same(key: str) -> bool:
        old, new = before.get(key), now.get(key)
        return old == new or (isinstance(old, str) and old.replace(old_dir, new_dir) == new)

    ignored = {"ckpt_path"}  # how this run starts, not how it trains
    return [(k, before.get(k, UNSET), now.get(k, UNSET))
            for k in sorted(before.keys() | now.keys()) if k not in ignored and not same(k)]


def settings_diff(stored: dict | None, cfg: DictConfig) -> list[str]:
    """``optimizer.lr 0.01 -> 0.001`` for every setting the run changes from the checkpoint's."""
    return [f"{key} {old} -> {new}" for key, old, new in _changes(_as_config(stored), cfg)]


def _stored_config(ckpt: dict) -> dict | None:
    """The config of the run that saved ``ckpt`` (train.py keeps it under "catdog"; older files lack it)."""
    return (ckpt.get("catdog") or {}).get("config")


def _as_config(stored: dict | None) -> DictConfig | None:
    return OmegaConf.create(stored) if stored else None


def describe_resume(path: str | os.PathLike, ckpt: dict, cfg: DictConfig) -> str:
    """One line: which run this one continues, from where, and what it changes."""
    path = Path(path)
    run = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    changed = settings_diff(_stored_config(ckpt), cfg)
    return (f"continuing run {run} from {path.name} (saved after {_epochs(_epochs_trained(ckpt))}, step {ckpt.get('global_step', '?')}); "
            + (f"settings changed from the checkpoint's: {', '.join(changed)}" if changed else "same settings as the checkpoint's"))


def _shapes_network(key: str, cfg: DictConfig) -> bool:
    """A setting that can change the network's shape, typed by the user rather than copied from
    another (model.net.image_size is ${data.image_size})."""
    if not (key.startswith("model.net.") or key in ("data.image_size", "data.classes")):
        return False
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent)
    return not (isinstance(node, DictConfig) and leaf in node and OmegaConf.is_interpolation(node, leaf))


def _checkpoint_value(key: str, old: object) -> object:
    """The checkpoint's value of ``key``; a network option added since it was saved (as the pools
    were in session 25) is SimpleCNN's default, the original's, which it was trained with."""
    if old != UNSET or not key.startswith("model.net."):
        return old
    param = inspect.signature(SimpleCNN).parameters.get(key.removeprefix("model.net."))
    return old if param is None else param.default


def check_same_optimizer(path: str | os.PathLike, ckpt: dict, cfg: DictConfig) -> None:
    """The saved optimizer state (Adam's moments, SGD's momentum) loads only into the optimizer that
    wrote it: another one is refused here, in one line, not by a KeyError inside its first step."""
    before = ((_stored_config(ckpt) or {}).get("optimizer") or {}).get("_target_")
    now = (cfg.get("optimizer") or {}).get("_target_")
    if before and now and before != now:
        raise UserError(f"{path} was trained with {before}, this run asks for {now}: its saved optimizer state continues "
                        f"only the same optimizer; drop the optimizer override, or start without ckpt_path")


def check_same_network(path: str | os.PathLike, ckpt: dict, model, cfg: DictConfig) -> None:
    """A run continues only a network of its own shape. Where a setting changed it (a new default's
    pools or image size, say), one line names the settings that bring the checkpoint's back,
    instead of load_state_dict's size-mismatch traceback."""
    saved, now = ckpt.get("state_dict") or {}, model.state_dict()
    differ = [k for k, v in saved.items() if k in now and tuple(v.shape) != tuple(now[k].shape)]
    if not differ:
        return
    first = differ[0]
    where = f"{path} holds a network of another shape than this run's ({first}: {tuple(saved[first].shape)} there, {tuple(now[first].shape)} here)"
    stored = _as_config(_stored_config(ckpt))  # built once: the values as set ([2, 4, 4]), not as _changes flattens them
    changed = [(k, _checkpoint_value(k, OmegaConf.select(stored, k, default=UNSET))) for k, _, _ in _changes(stored, cfg)
               if _shapes_network(k, cfg)]
    back = " ".join(f"'{k}={as_typed(old)}'" for k, old in changed if old != UNSET)
    if not back:
        raise UserError(f"{where}: start without ckpt_path, or with the settings it was trained with")
    raise UserError(f"{where}: add {back} to continue it with the settings it was trained with, or start without ckpt_path")
