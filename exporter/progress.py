"""Stage timing and progress bars for long export steps, through logging (the CLI decides what shows)."""

from __future__ import annotations

import logging
import sys
import time
from contextlib import contextmanager
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")
log = logging.getLogger("ijepa_deploy.exporter")


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
    """Log what a stage does and, when it ends, how long it took and the peak memory so far."""
    log.info("- %s ...", title)
    start = time.perf_counter()
    yield
    peak = peak_rss_gb()
    log.info("  done: %s (%.1f s%s)", title, time.perf_counter() - start, f", peak RSS {peak:.2f} GB" if peak else "")


def progress(items: Iterable[T], label: str) -> Iterator[T]:
    """A progress bar on an interactive terminal when progress is being shown; plain iteration otherwise."""
    items = list(items)
    if not log.isEnabledFor(logging.INFO) or not sys.stderr.isatty() or len(items) < 2:
        yield from items
        return
    import click

    with click.progressbar(items, label=f"  {label}", file=sys.stderr) as bar:
        yield from bar
