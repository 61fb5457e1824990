"""The progress line of a batch, on stderr.

    grading 10 notebooks with -j 2 ...
    graded 3/10  ok 2  failed 1  elapsed 0:42  eta 1:24  last: subs/alice.ipynb

On a terminal the second line is rewritten in place (and refreshed by `tick` so the elapsed time
moves); otherwise (a log file, CI) one such line is printed per finished notebook. The counts
include results taken over from an earlier run of a resumed batch; the ETA uses only this run's
pace.
"""

from __future__ import annotations

import shutil
import sys
import time


def fmt_duration(seconds: float) -> str:
    s = max(0, int(round(seconds)))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    def __init__(self, total: int, *, jobs: int = 1, stream=None, enabled: bool = True,
                 clock=time.monotonic, tty: bool | None = None):
        self.total = total
        self.jobs = jobs
        self.stream = sys.stderr if stream is None else stream
        self.enabled = enabled
        self.clock = clock
        if tty is None:
            try:
                tty = self.stream.isatty()
            except (AttributeError, ValueError):
                tty = False
        self.tty = tty
        self.ok = self.failed = self.resumed = 0
        self.finished_now = 0  # finished in this run (for the ETA)
        self.last = ""
        self.t0 = clock()
        self._drawn = False  # a TTY line is on screen without its newline

    # -- output ----------------------------------------------------------------------------------
    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            pass  # a closed or broken stderr must not stop grading

    def _clear(self) -> None:
        if self._drawn:
            self._write("\r\x1b[K")
            self._drawn = False

    def message(self, text: str) -> None:
        """A line of its own (the progress line is redrawn after it on a terminal)."""
        if not self.enabled:
            return
        self._clear()
        self._write(text + "\n")
        if self.tty and self.done:
            self._draw()

    def start(self, note: str = "") -> None:
        self.t0 = self.clock()
        plural = "notebook" if self.total == 1 else "notebooks"
        self.message(f"grading {self.total} {plural} with -j {self.jobs}{note} ...")

    # -- counts ----------------------------------------------------------------------------------
    @property
    def done(self) -> int:
        return self.ok + self.failed

    def add_resumed(self, ok: bool) -> None:
        """A result recorded by an earlier run of this batch."""
        self.resumed += 1
        if ok:
            self.ok += 1
        else:
            self.failed += 1

    def finished(self, path: str, ok: bool) -> None:
        self.finished_now += 1
        if ok:
            self.ok += 1
        else:
            self.failed += 1
        self.last = str(path)
        if not self.enabled:
            return
        if self.tty:
            self._draw()
        else:
            self._write(self.line() + "\n")

    def tick(self) -> None:
        """Refresh the elapsed time on a terminal (call about once a second)."""
        if self.enabled and self.tty:
            self._draw()

    def close(self) -> None:
        if self.enabled and self._drawn:
            self._write("\n")
            self._drawn = False

    # -- the line --------------------------------------------------------------------------------
    def line(self, width: int | None = None) -> str:
        elapsed = self.clock() - self.t0
        remaining = self.total - self.done
        if self.finished_now and remaining > 0:
            eta = fmt_duration(elapsed / self.finished_now * remaining)
        elif remaining <= 0:
            eta = "0:00"
        else:
            eta = "--:--"
        text = f"graded {self.done}/{self.total}  ok {self.ok}  failed {self.failed}"
        if self.resumed:
            text += f"  resumed {self.resumed}"
        text += f"  elapsed {fmt_duration(elapsed)}  eta {eta}"
        if self.last:
            last = self.last
            if width is not None:
                room = width - len(text) - len("  last: ")
                if room < len(last):
                    last = "..." + last[-max(room - 3, 8):]
            text += f"  last: {last}"
        return text if width is None else text[:width]

    def _draw(self) -> None:
        width = shutil.get_terminal_size((100, 20)).columns - 1
        self._write("\r\x1b[K" + self.line(width))
        self._drawn = True
