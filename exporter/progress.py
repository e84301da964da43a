"""Stage timing and progress bars for long steps (printed to stderr)."""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Iterable, Iterator, TypeVar

import click

T = TypeVar("T")
quiet = False


def say(message: str) -> None:
    if not quiet:
        click.echo(message, err=True)


def peak_rss_gb() -> float | None:
    """This process's peak resident memory so far (VmHWM), in GB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return None


@contextmanager
def stage(title: str) -> Iterator[None]:
    """Print what a stage does and, when it ends, how long it took and the peak memory so far."""
    say(f"- {title} ...")
    start = time.perf_counter()
    yield
    peak = peak_rss_gb()
    say(f"  done: {title} ({time.perf_counter() - start:.1f} s" + (f", peak RSS {peak:.2f} GB)" if peak else ")"))


def progress(items: Iterable[T], label: str) -> Iterator[T]:
    """A progress bar on an interactive terminal; plain iteration otherwise."""
    items = list(items)
    if quiet or not sys.stderr.isatty() or len(items) < 2:
        yield from items
        return
    with click.progressbar(items, label=f"  {label}", file=sys.stderr) as bar:
        yield from bar
