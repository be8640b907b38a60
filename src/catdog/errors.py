"""The one exception type for mistakes a user can fix: entry points print it as one line."""


class UserError(Exception):
    """A wrong path, a bad override, a checkpoint from another config: say what to do, no traceback."""
