"""Copy fds 1 and 2 to the terminal and to a buffer: what subprocesses (DVC's stage commands) write,
captured without hiding it."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator


@contextlib.contextmanager
def tee_output() -> Iterator[list[bytes]]:
    """Copy fds 1 and 2 (what DVC's stage subprocesses write) to the terminal and to a buffer, so
    each stage's own output also lands in its Prefect task log."""
    chunks: list[bytes] = []
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    pumps = []
    for fd in (1, 2):
        r, w = os.pipe()
        os.dup2(w, fd)
        os.close(w)

        def pump(r: int = r, out: int = saved[fd]) -> None:
            while data := os.read(r, 65536):
                os.write(out, data)
                chunks.append(data)
            os.close(r)

        t = threading.Thread(target=pump, daemon=True)
        t.start()
        pumps.append(t)
    try:
        yield chunks
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, orig in saved.items():
            os.dup2(orig, fd)  # closes the pipe's last write end: the pump sees EOF
        for t in pumps:
            t.join(timeout=10)
        for orig in saved.values():
            os.close(orig)
