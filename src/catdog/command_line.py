"""The command line's mistakes in one line: Hydra reports a mistyped key, a config group option that
does not exist or an override it cannot parse in several lines, and for a typo it suggests adding
the key with ``+``; here they end like every other user error, with what to type instead. And a value
of another kind than its setting's (``hard_labels=no``), which Hydra takes as it is."""

from __future__ import annotations

import difflib
import os
import re
import sys
from pathlib import Path
from typing import Callable

from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from catdog.errors import UserError

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"  # every entry point's config_path: src/../conf


def run_command_line(main: Callable[[], object]) -> None:
    """Run a ``@hydra.main`` entry point; a command line Hydra cannot compose ends in one line, exit 2."""
    if os.environ.get("HYDRA_FULL_ERROR"):  # the user asked for Hydra's own full report
        main()
        return
    # Hydra prints its report itself unless this is set; set, it raises, and the report is ours.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        main()
    except (ConfigCompositionException, OverrideParseException) as err:
        print(f"error: {describe(err)}", file=sys.stderr, flush=True)
        sys.exit(2)


def describe(err: Exception) -> str:
    """What is wrong with the command line and what to type instead, in one line."""
    cause, message = err.__cause__, str(err)
    if isinstance(cause, OmegaConfBaseException) and cause.full_key and "Could not override" in message:
        return _unknown_key(str(cause.full_key), cause.parent_node, message)
    missing = re.search(r"Could not (?:find|load) '([^']+)'", message)
    if isinstance(err, MissingConfigException) and missing:
        return _unknown_option(missing.group(1), list(err.options or []) or _group_options(missing.group(1).rpartition("/")[0]))
    doubled = re.search(r"Multiple values for (\S+)\. To override a value use 'override \S+ (\S+)'", message)
    if doubled:  # `+experiment=cpu` where the defaults list already has an experiment slot
        return f"{doubled.group(1)} is already in the config: drop the +, as in {doubled.group(1)}={doubled.group(2)}"
    if isinstance(err, OverrideParseException):
        tilde = " (a ~ inside a value must be quoted, as in 'data.root=\"~/photos\"', or use $HOME)" if "~" in message else ""
        return f"cannot read an override: {_one_line(message)}{tilde}"
    return _one_line(message)


def _group_options(group: str) -> list[str]:
    """The options of config group ``group`` (``callbacks/early_stopping``) in conf/; none where it is no group."""
    folder = CONF_DIR / group
    return sorted(p.stem for p in folder.glob("*.yaml")) if group and folder.is_dir() else []


def _unknown_key(full_key: str, parent, message: str) -> str:
    """A key the config does not have: the config group that would add it, the nearest key it does
    have, or how to add it."""
    group = full_key.replace(".", "/")
    # `callbacks.early_stopping.patience=5` before the group is chosen; a nested group only, whose parent
    # this command's config has (a top-level one, `callbacks`, may belong to another command).
    if "/" in group and (options := _group_options(group)):
        return (f"{full_key} is there only once its config group is chosen: add {group}={options[0]} "
                f"(options: {', '.join(options)}) before its settings")
    parent_key, _, key = full_key.rpartition(".")
    keys = list(parent.keys()) if hasattr(parent, "keys") else []
    if close := difflib.get_close_matches(key, keys, n=1):
        return f"{full_key} is not a setting; did you mean {parent_key + '.' if parent_key else ''}{close[0]}?"
    listed = f"`--cfg job` lists the settings{' of ' + parent_key if parent_key else ''}"
    append = re.search(r"use (\+\S+)", message)
    return f"{full_key} is not a setting; {listed}" + (f" ({append.group(1)} would add it as a new one)" if append else "")


def _unknown_option(missing: str, options: list[str]) -> str:
    """A config group option that does not exist (``experiment=cpuu``), with the ones that do."""
    group, _, name = missing.rpartition("/")
    if name.startswith("submitit"):
        return f"{missing} needs the optional SLURM launcher: pip install -e '.[slurm]'"
    close = difflib.get_close_matches(name, options, n=1)
    hint = f"did you mean {group}={close[0]}? " if close else ""
    return f"there is no {group} named {name!r}: {hint}(choices: {', '.join(options)})"


def _one_line(message: str) -> str:
    """Hydra's message without its config search path, its lines joined."""
    lines = [line.strip() for line in message.split("Config search path")[0].splitlines() if line.strip()]
    return "; ".join(lines)


def check_value_kinds() -> None:
    """Refuse, in one line and before any work, a value of another kind than its setting's
    (``hard_labels=no``, ``data.image_size=abc``): YAML-typed settings would take any word as true,
    or fail deep inside with a traceback. A setting's kind is its value in the config composed without
    the command line's values (its config group choices kept); settings whose default is null or an
    interpolation take anything."""
    from hydra import compose
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if not HydraConfig.initialized() or not GlobalHydra.instance().is_initialized():  # (a launcher's own process)
        return
    hydra_cfg = HydraConfig.get()
    choices = {group: choice for group, choice in hydra_cfg.runtime.choices.items()
               if not group.startswith("hydra") and choice is not None}
    overrides = OverridesParser.create().parse_overrides(list(hydra_cfg.overrides.task))
    # Group choices: those Hydra records, and lists of options (`logger=[tensorboard,csv]`), which it does not.
    listed = [o for o in overrides if o.key_or_group not in choices and _group_options(o.key_or_group)]
    values = [o for o in overrides if not (o.is_add() or o.is_delete() or o.key_or_group in choices or o in listed
                                           or o.key_or_group.startswith("hydra."))]
    if not values:
        return
    try:
        defaults = OmegaConf.to_container(compose(hydra_cfg.job.config_name, [*(f"{g}={c}" for g, c in choices.items()),
                                                                              *(o.input_line for o in listed)]),
                                          resolve=False)
    except Exception:  # a courtesy check: where the defaults cannot be composed again, the run goes on unchecked
        return
    for override in values:
        default = _lookup(defaults, override.key_or_group)
        wanted = _kind_wanted(override.key_or_group, default, override.value())
        if wanted:
            raise UserError(f"{override.input_line}: {override.key_or_group} takes {wanted}, like its default, {as_typed(default)}")


def _lookup(config: dict, key: str) -> object:
    for part in key.split("."):
        if not isinstance(config, dict) or part not in config:
            return None
        config = config[part]
    return config


def _kind_wanted(key: str, default: object, value: object) -> str | None:
    """What kind ``value`` should be, where it is not of ``default``'s kind; None where it fits."""
    if default is None or value is None or (isinstance(default, str) and default.startswith("${")):
        return None
    if isinstance(value, str) and value.startswith("${"):
        return None  # an interpolation, resolved later
    if isinstance(default, bool):
        # Lightning's own switches may take words too (trainer.deterministic=warn), and it checks them.
        return None if isinstance(value, bool) or (key.startswith("trainer.") and isinstance(value, str)) else "true or false"
    if isinstance(default, (int, float)):
        return None if isinstance(value, (int, float)) and not isinstance(value, bool) else "a number"
    if isinstance(default, list):
        return None if isinstance(value, list) else "a list"
    if isinstance(default, dict):
        return None if isinstance(value, dict) else "a mapping"
    return None


def as_typed(value: object) -> str:
    """``value`` as it is typed on the command line: ``false``, ``[2,4,4]``, ``(2, 2, 2)`` -> ``[2,2,2]``."""
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value)
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(map(as_typed, value)) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{as_typed(v)}" for k, v in value.items()) + "}"
    return str(value)
