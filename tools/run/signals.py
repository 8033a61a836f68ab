"""Ctrl-C and SIGTERM during a run: the loop finishes its step, keeps what it can and says how to resume."""
import signal
from typing import Optional


class StopFlag:
    """SIGINT/SIGTERM set `signum`; the loop checks it after each step, keeps its state and leaves. A second
    Ctrl-C stops at once (KeyboardInterrupt). Use as a context manager: the old handlers come back."""

    def __init__(self) -> None:
        self.signum: Optional[int] = None
        self.old = {s: signal.signal(s, self._set) for s in (signal.SIGINT, signal.SIGTERM)}

    def _set(self, signum, frame) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""

    def restore(self) -> None:
        for s, h in self.old.items():
            signal.signal(s, h)

    def __enter__(self) -> "StopFlag":
        return self

    def __exit__(self, *exc) -> None:
        self.restore()


class Stopped(Exception):
    """A run left at a signal, its state kept; the message says where. The command line adds how to resume
    and exits 128 + signum, as a process the signal had killed would."""

    def __init__(self, signum: int, where: str) -> None:
        super().__init__(where)
        self.signum = signum
