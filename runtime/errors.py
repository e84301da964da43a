"""One hierarchy for errors a user can act on, and the wrapper that turns them into one line.

Every error raised for bad input, a bad file or a missing dependency derives from `UserError`;
the CLIs print it as `error: <message>` and exit 1. Anything else is a bug: exit 2 with one line
(the traceback with `--debug`). SIGTERM (`timeout`, `docker stop`) is handled like Ctrl-C, so the
same cleanup runs and nothing half-written is left behind.
"""

from __future__ import annotations

import signal
import sys
import traceback
from typing import Callable, TypeVar

T = TypeVar("T")


class UserError(Exception):
    """An error the user can act on: printed as one line, exit status 1."""


class ManifestError(UserError, ValueError):
    """An artifact folder or its manifest is missing, malformed or incompatible."""


class IntegrityError(ManifestError):
    """A file of an artifact folder differs from what its manifest recorded."""


class ImageError(UserError, ValueError):
    """An input could not be read as an image."""


class BackendError(UserError, RuntimeError):
    """A backend could not be created or run."""


class UsageError(UserError, ValueError):
    """A command-line or API value is malformed."""


class OutputError(UserError, OSError):
    """An output could not be written."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C would be so that the same cleanup runs."""


def _raise_terminated(signum, frame):  # pragma: no cover - exercised by the kill tests in subprocesses
    raise Terminated()


def handle_sigterm() -> None:
    """Make SIGTERM raise `Terminated` in the main thread (a no-op elsewhere)."""
    try:
        signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread
        pass


def run_cli(func: Callable[[], T], debug: bool = False, interrupted: str = "interrupted") -> T:
    """Run a command body: user errors become one line and exit 1, anything else exit 2."""
    from click import echo

    handle_sigterm()
    try:
        return func()
    except Terminated:
        echo(f"error: terminated; {interrupted}", err=True)
        sys.exit(143)
    except KeyboardInterrupt:
        echo(f"error: {interrupted}", err=True)
        sys.exit(130)
    except UserError as exc:
        if debug:
            traceback.print_exc()
        echo(f"error: {exc}", err=True)
        sys.exit(1)
    except MemoryError:
        if debug:
            raise
        echo("error: out of memory; lower --batch-size or use a machine with more memory", err=True)
        sys.exit(1)
    except Exception as exc:  # a bug: still one line unless --debug
        if debug:
            raise
        first = str(exc).splitlines()[0] if str(exc) else ""
        echo(f"error: unexpected {type(exc).__name__}: {first} (run with --debug for the traceback)", err=True)
        sys.exit(2)


def click_entry(command):
    """A console-script entry point for a click command whose usage errors (a bad option value,
    a missing argument) are one `error:` line and exit 1, like every other user error."""
    import click

    def main(args=None):
        try:
            command.main(args=args, standalone_mode=False)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            hint = f" (see {exc.ctx.command_path} --help)" if exc.ctx else " (see --help)"
            click.echo(f"error: {exc.format_message()}{hint}", err=True)
            sys.exit(1)
        except click.Abort:
            click.echo("error: interrupted", err=True)
            sys.exit(130)
        sys.exit(0)

    main.command = command
    return main
