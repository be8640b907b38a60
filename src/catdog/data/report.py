"""Tell the user which files were left out and why: ``bad_files.csv`` and one warning line."""

from __future__ import annotations

import csv
import logging
import os
from collections import Counter
from pathlib import Path

log = logging.getLogger("catdog")


def report_skipped(bad: list[tuple[str, str]], total: int, out_dir: str | os.PathLike | None,
                   ignored: list[tuple[str, str]] = (), note: str = "") -> Path | None:
    """Write (path, reason) rows for the unreadable files and the entries set aside by name
    (hidden files, folders named like images, ...) to ``out_dir/bad_files.csv``, and log one
    line that counts them; nothing when there are none."""
    rows = [*bad, *ignored]
    if not rows:
        return None
    report = None
    if out_dir:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        report = Path(out_dir) / "bad_files.csv"
        with open(report, "w", newline="") as f:
            csv.writer(f).writerows([("path", "reason"), *rows])
    reasons = ", ".join(f"{n} {r}" for r, n in Counter(reason.split(":")[0] for _, reason in bad).most_common())
    skipped = f"skipped {len(bad)} of {total} files ({reasons})" if bad else "no unreadable files"
    set_aside = f"; set aside {len(ignored)} other entries (hidden, folders, not image names)" if ignored else ""
    log.warning("%s%s%s%s", skipped, set_aside, f": see {report}" if report else "", note)
    return report
