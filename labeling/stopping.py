"""Stop signals (Ctrl-C, SIGTERM) taken by the main thread together with who sent them.

A server stopped from outside looks, from its clients, like a server that dropped their connections: an idle or
just-accepted connection is closed without a reply ("Server disconnected without sending a response") and the next
one is refused. A crash looks the same (issue 11's dropped first connection was one: see
``labeling.sources.faceview``), so the server tells the two apart: it says on stderr which signal stopped it and
which process sent it: the signals are blocked in every thread (block them before the server's threads start;
threads inherit the mask) and the main thread takes them with ``sigtimedwait``, whose ``si_pid`` names the sender. A
Python handler alone could not tell.

``labeling serve`` blocks them before it starts any thread (``python -m labeling serve`` even before its imports:
numpy's BLAS starts a thread at import), so every thread inherits the mask and a signal sent at any moment waits,
pending, for the main thread. Only a caller that already runs threads of its own (``main()`` called in-process)
may have a signal taken by one of them; ``note_stop_signals`` installs a handler that records such a signal
(sender unknown) instead of raising ``KeyboardInterrupt`` at whatever line the main thread happens to be on.
"""

from __future__ import annotations

import signal
import threading
from dataclasses import dataclass
from pathlib import Path

__all__ = ["STOP_SIGNALS", "StopSignal", "block_stop_signals", "note_stop_signals", "pending_stop_signal",
           "unblock_stop_signals", "wait_stop_signal"]

STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})


@dataclass(frozen=True)
class StopSignal:
    """A stop signal and its sender (pid 0: the kernel, e.g. Ctrl-C typed in the terminal)."""

    signo: int
    pid: int | None  # None: taken by another thread, sender unknown
    uid: int | None = None

    def describe(self) -> str:
        """One line for stderr, e.g. ``SIGTERM from pid 4242 (pkill -f labeling serve)``."""
        name = signal.Signals(self.signo).name
        if self.pid is None:
            return f"{name} (sender unknown: a thread other than the main one took it)"
        if self.pid == 0:
            return f"{name} from the terminal or the kernel"
        return f"{name} from pid {self.pid}" + (f" ({cmdline})" if (cmdline := _cmdline(self.pid)) else "")


def _cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:  # gone already, or no /proc
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()[:200]


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def block_stop_signals() -> bool:
    """Block SIGINT and SIGTERM in the calling (main) thread, and so in every thread it starts afterwards; the
    signals then wait, pending, for ``wait_stop_signal``. False (nothing done) outside the main thread."""
    if not _in_main_thread():
        return False
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    return True


_NOTED: list[int] = []  # stop signals the handler of ``note_stop_signals`` saw (taken by another thread)
_PREVIOUS: dict[int, object] = {}  # the handlers ``note_stop_signals`` replaced, put back by ``unblock_stop_signals``


def note_stop_signals() -> None:
    """Handle SIGINT and SIGTERM (main thread only) by noting them for ``wait_stop_signal``: an inherited SIG_IGN
    no longer hides them, and nothing is raised at an arbitrary line."""
    if not _in_main_thread():
        return
    for signo in STOP_SIGNALS:
        previous = signal.signal(signo, lambda signum, frame: _NOTED.append(signum))
        _PREVIOUS.setdefault(signo, previous)


def wait_stop_signal(timeout: float) -> StopSignal | None:
    """The next stop signal within ``timeout`` seconds, with its sender when the main thread took it; None if none
    came. Call it from the main thread after ``block_stop_signals``."""
    info = signal.sigtimedwait(STOP_SIGNALS, timeout)
    if info is not None:
        return StopSignal(info.si_signo, info.si_pid, info.si_uid)
    return StopSignal(_NOTED.pop(0), None) if _NOTED else None  # Python ran the handler when the wait returned


def pending_stop_signal() -> StopSignal | None:
    """A stop signal that already arrived, taken without waiting; None if there is none."""
    if STOP_SIGNALS & signal.sigpending():
        return wait_stop_signal(0)
    return StopSignal(_NOTED.pop(0), None) if _NOTED else None


def unblock_stop_signals() -> None:
    """Take any stop signals still pending (a second Ctrl-C during shutdown), unblock them and put the handlers
    back that ``note_stop_signals`` replaced (a caller that goes on, such as a test, gets its Ctrl-C back)."""
    if not _in_main_thread():
        return
    while pending_stop_signal() is not None:
        pass
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    for signo, previous in _PREVIOUS.items():
        signal.signal(signo, previous)
    _PREVIOUS.clear()
    _NOTED.clear()
