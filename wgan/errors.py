"""What every command does with a user's mistake: one ``error:`` line and exit status 2.

Each module raises its own subclass of :class:`UserError` (ConfigError, DataError, ...), so a
command catches one type, prints :func:`one_line` of it and exits with its ``exit_code``; an
unexpected exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
from typing import Any

import click

# The exit statuses of the commands (train, sample, check, report, fid_weights).
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NAN = 0, 1, 2, 3
EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143  # the shell's 128 + SIGINT / SIGTERM


class UserError(ValueError):
    """A mistake in what the user asked for (or a file they gave); the message is one line."""

    exit_code = EXIT_USAGE


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message, fit for a terminal; an OSError says what and where."""
    if isinstance(exc, OSError) and exc.strerror:
        where = f" {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}:{where}" if where else exc.strerror
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def is_disk_error(exc: BaseException) -> bool:
    """A full disk, a quota or a read-only file system: the user's machine, not a bug of ours."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES)


class UsageError(UserError):
    """A bad command line that no other module's error type covers."""


class OneLineError(click.ClickException):
    """A click usage error shown as the project's one ``error:`` line (no usage block), exit 2."""

    exit_code = EXIT_USAGE

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


class OneLineCommand(click.Command):
    """A command whose parse errors (a bad option value, a missing argument) are one ``error:`` line,
    like every other refusal of the commands; ``--help`` still shows the usage."""

    def make_context(
        self, info_name: str | None, args: list[str], parent: click.Context | None = None, **extra: Any
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as exc:
            raise OneLineError(exc.format_message()) from None
