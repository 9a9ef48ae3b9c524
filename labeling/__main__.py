"""``python -m labeling``.

For ``serve``, SIGINT and SIGTERM are blocked before anything is imported: numpy's BLAS starts a thread at import,
threads inherit their creator's signal mask, and a stop signal must wait for the main thread, which takes it with
its sender (``labeling.stopping``). Every other command keeps the default: Ctrl-C is ``KeyboardInterrupt``.

``serve`` also turns on ``faulthandler``: a crash in native code (issue 11's dropped first connection was dlib's
detector used by two threads at once) then leaves every thread's Python stack on stderr instead of nothing.
"""

import faulthandler
import signal
import sys

if sys.argv[1:2] == ["serve"]:
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    faulthandler.enable()

from labeling.cli import main  # noqa: E402 - after the mask, on purpose

if __name__ == "__main__":
    sys.exit(main())
