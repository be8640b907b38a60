"""Write a file so that a crash never leaves half of it: write a temporary file beside it,
flush it to disk, then rename it into place (a rename within one folder is atomic)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, Callable


def write_atomic(path: str | os.PathLike, content: str | bytes | Callable[[IO[bytes]], None]) -> None:
    """Replace ``path`` with ``content``: text, bytes, or a function that writes to a binary file.

    Beside the target rather than in the system's temp folder, which may be another disk, where
    the final move would be a copy that a crash can cut short. Readers see the old file or the
    new one, never a mix; the temporary file is removed if writing fails."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            if callable(content):
                content(f)
            else:
                f.write(content.encode() if isinstance(content, str) else content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
