"""What every command shares: one-line errors, SIGTERM handled like Ctrl-C, logging set up.

Every error a user can act on (`UserError`) is printed as `error: <message>` with exit 1; anything
else is a bug: exit 2 with one line (the traceback with `--debug`). SIGTERM (`timeout`, `docker
stop`) raises where Ctrl-C would, so the same cleanup runs and nothing half-written is left. The
library only logs (`logging.getLogger("ijepa_deploy...")`); the commands decide what is shown:
progress at INFO, nothing but errors with `--quiet`, everything with `--debug`.
"""

from __future__ import annotations

import logging
import signal
import sys
import traceback
from typing import Callable, TypeVar

import click

from ijepa_deploy.contract.errors import UserError

T = TypeVar("T")
CONTEXT = {"help_option_names": ["-h", "--help"]}
NOISY = ("ray", "ray.data", "ray.serve", "ray.train", "uvicorn.access")


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


def configure_logging(quiet: bool = False, debug: bool = False) -> None:
    """Show the library's progress on stderr as plain lines (INFO), only errors with --quiet."""
    level = logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO
    logger = logging.getLogger("ijepa_deploy")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    for name in NOISY:  # engines that log progress at INFO on their own: warnings and errors only
        logging.getLogger(name).setLevel(logging.DEBUG if debug else logging.WARNING)


def quiet_ray(debug: bool = False) -> None:
    """Before a command uses Ray: Ray Data logs its progress at INFO through handlers of its own, set up
    when `ray.data` is imported; turned down to warnings unless --debug."""
    if debug:
        return
    try:
        import ray.data  # noqa: F401  (sets up its loggers, which are then turned down)
    except ImportError:
        return
    for name in NOISY:
        logging.getLogger(name).setLevel(logging.WARNING)


def run_cli(func: Callable[[], T], debug: bool = False, interrupted: str = "interrupted", quiet: bool = False) -> T:
    """Run a command body: user errors become one line and exit 1, anything else exit 2."""
    configure_logging(quiet, debug)
    handle_sigterm()
    try:
        return func()
    except Terminated:
        click.echo(f"error: terminated; {interrupted}", err=True)
        sys.exit(143)
    except KeyboardInterrupt:
        click.echo(f"error: {interrupted}", err=True)
        sys.exit(130)
    except UserError as exc:
        if debug:
            traceback.print_exc()
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except MemoryError:
        if debug:
            raise
        click.echo("error: out of memory; lower --batch-size or use a machine with more memory", err=True)
        sys.exit(1)
    except Exception as exc:  # a bug: still one line unless --debug
        if debug:
            raise
        first = str(exc).splitlines()[0] if str(exc) else ""
        click.echo(f"error: unexpected {type(exc).__name__}: {first} (run with --debug for the traceback)", err=True)
        sys.exit(2)


def click_entry(command):
    """A console-script entry point for a click command whose usage errors (a bad option value,
    a missing argument) are one `error:` line and exit 1, like every other user error."""

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
