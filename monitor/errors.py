"""The one base of fairwatch's user-facing errors.

A :class:`FairwatchError` is a problem worded for one line, for the user:
a file that cannot be read, a flag that makes no sense, a broker that does
not answer. The command line (``fairwatch.command_support.run_command``) catches the base in one
place and prints ``fairwatch COMMAND: error: MESSAGE`` with the error's
``exit_code``; a library caller catches it (or the builtin base each
subclass keeps, such as ``ValueError``) the same way. Programming errors and
worker failures are not FairwatchErrors: they keep their traceback.
"""

from __future__ import annotations

__all__ = ["EXIT_USAGE", "FairwatchError", "UsageError", "first_line", "one_line"]

EXIT_USAGE = 2  # the exit status of every FairwatchError unless a subclass says otherwise


class FairwatchError(Exception):
    """A problem worded for one line, for the user (the CLI prints it and exits with ``exit_code``)."""

    exit_code: int = EXIT_USAGE


class UsageError(FairwatchError):
    """A problem with what the user asked for (flags, arguments, files named on the command line)."""


def one_line(text: str, limit: int = 1000) -> str:
    """``text`` with every run of whitespace (line breaks included) made one space, at most ``limit`` characters.

    >>> one_line("redirect loop.\\nThe last 30x error message was:\\nFound")
    'redirect loop. The last 30x error message was: Found'
    """
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of ``exc``'s message, at most ``limit`` characters; its type's name when it has none.

    >>> first_line(RuntimeError("no working C++ compiler\\nsecond line")), first_line(KeyError())
    ('no working C++ compiler', 'KeyError')
    """
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__
