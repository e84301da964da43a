"""Progress of long runs on a terminal: images done, images/s and ETA on one rewritten line."""

from __future__ import annotations

import sys
import time


class ProgressLine:
    """A `(done, total)` callback that draws on stderr when it is a terminal (runs of 16 images or more)."""

    def __init__(self):
        self.enabled = sys.stderr.isatty()
        self.start = time.perf_counter()
        self.first: int | None = None
        self.drawn = False

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled or total < 16:
            return
        if self.first is None:
            self.first = done
        rate = (done - self.first) / max(time.perf_counter() - self.start, 1e-9)
        eta = (total - done) / rate if rate > 0 else float("inf")
        eta_text = time.strftime("%H:%M:%S", time.gmtime(eta)) if eta < 1e7 else "--:--:--"
        sys.stderr.write(f"\r  {done}/{total} images, {rate:.2f} images/s, ETA {eta_text}  ")
        sys.stderr.flush()
        self.drawn = True

    def close(self) -> None:
        """End the line (once, however often it is called)."""
        if self.drawn:
            sys.stderr.write("\n")
            self.drawn = False
