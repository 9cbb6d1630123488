"""The one list of errors meant for the user: their message names the file or setting and says what to do, so
the command line prints it as one line (exit status 2) and the plugin as a plain notification, never a
traceback. Anything else is a bug and keeps its traceback."""

from __future__ import annotations

from .atomic import DiskFullError
from .export import ExportError
from .ids import UnsafeIdError
from .image_files import DataError
from .review_file import ReviewError
from .runs import RunError
from .settings import TrainingError

__all__ = ["INTERACTIVE_ERRORS", "USER_ERRORS", "is_user_error"]

#: the engine's own errors (RunLocked, a second writer on a run, is a RunError; a full disk is the one OSError a
#: user fixes; a file named on the command line that is not there is FileNotFoundError)
USER_ERRORS: tuple[type[Exception], ...] = (DataError, TrainingError, RunError, UnsafeIdError, DiskFullError,
                                            FileNotFoundError, ReviewError, ExportError)
#: what an interactive face (the plugin) also shows as a message: a value typed in a form (ValueError), an image
#: id that is not in the run (KeyError) or a file chosen in a dialog (OSError) is the person's to fix, there
#: and then
INTERACTIVE_ERRORS: tuple[type[Exception], ...] = (*USER_ERRORS, ValueError, KeyError, OSError)


def is_user_error(exc: BaseException, interactive: bool = False) -> bool:
    """Whether ``exc``'s message is for the user (``interactive``: in the plugin) rather than a bug's traceback."""
    return isinstance(exc, INTERACTIVE_ERRORS if interactive else USER_ERRORS)
