"""The one exception type for problems with the user's input.

Scripts catch `ToolkitError` at the top (see `utils.cli.run_main`), print its message as one line and exit
with status 2. Raise it for anything the user can fix: an unknown name, a missing file, a wrong flag.
"""


class ToolkitError(Exception):
    """A problem with the user's input, data files or run directory; its message says what to do."""
