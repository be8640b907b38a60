"""The one exception type for mistakes a user can fix: entry points print it as one line."""


class UserError(Exception):
    """A wrong path, a bad override, a checkpoint from another config: say what to do, no traceback."""

    exit_code = 2


class DiskFullError(UserError):
    """The disk filled up while the run was writing: what was saved before is kept. Its own exit
    code (ENOSPC's number) lets a scheduler tell it from a mistake in the command."""

    exit_code = 28
