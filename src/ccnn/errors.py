"""The project's error for mistakes a user can fix.

:class:`OptionError` is raised by our own validation — a layer argument, a configuration key, a
data file, a checkpoint — with a message that names the problem and the fix. The command-line
apps print exactly these as one line (``error: ...``, exit code 2); every other exception is a
bug and keeps its traceback. It subclasses ``ValueError`` so ``except ValueError`` still works.
"""

from __future__ import annotations


class OptionError(ValueError):
    """A setting, argument, input or file the user can fix; the message says how."""
