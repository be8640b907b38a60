"""The command line's mistakes in one line: Hydra reports a mistyped key, a config group option that
does not exist or an override it cannot parse in several lines, and for a typo it suggests adding
the key with ``+``; here they end like every other user error, with what to type instead."""

from __future__ import annotations

import difflib
import os
import re
import sys
from typing import Callable

from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from omegaconf.errors import OmegaConfBaseException


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
    cause = err.__cause__
    if isinstance(cause, OmegaConfBaseException) and cause.full_key and "Could not override" in str(err):
        return _unknown_key(str(cause.full_key), cause.parent_node, str(err))
    if isinstance(err, MissingConfigException) and err.options:
        return _unknown_option(str(err), list(err.options))
    doubled = re.search(r"Multiple values for (\S+)\. To override a value use 'override \S+ (\S+)'", str(err))
    if doubled:  # `+experiment=cpu` where the defaults list already has an experiment slot
        return f"{doubled.group(1)} is already in the config: drop the +, as in {doubled.group(1)}={doubled.group(2)}"
    if isinstance(err, OverrideParseException):
        return f"cannot read an override: {_one_line(str(err))}"
    return _one_line(str(err))


def _unknown_key(full_key: str, parent, message: str) -> str:
    """A key the config does not have, with the nearest one it does have, if any."""
    parent_key, _, key = full_key.rpartition(".")
    prefix = f"{parent_key}." if parent_key else ""
    keys = list(parent.keys()) if hasattr(parent, "keys") else []
    close = difflib.get_close_matches(key, keys, n=1)
    hint = f"did you mean {prefix}{close[0]}?" if close else f"`--cfg job` lists the settings{' of ' + parent_key if parent_key else ''}"
    append = re.search(r"use (\+\S+)", message)
    new_key = f" ({append.group(1)} would add it as a new one)" if append else ""
    return f"{full_key} is not a setting; {hint}{new_key}"


def _unknown_option(message: str, options: list[str]) -> str:
    """A config group option that does not exist (``experiment=cpuu``), with the ones that do."""
    missing = re.search(r"Could not find '([^']+)'", message)
    group, _, name = (missing.group(1) if missing else "").rpartition("/")
    close = difflib.get_close_matches(name, options, n=1)
    hint = f"did you mean {group}={close[0]}? " if close else ""
    return f"there is no {group} named {name!r}: {hint}(choices: {', '.join(options)})"


def _one_line(message: str) -> str:
    """Hydra's message without its config search path, its lines joined."""
    lines = [line.strip() for line in message.split("Config search path")[0].splitlines() if line.strip()]
    return "; ".join(lines)
