"""Shared pieces of the reliability suite: the `outcome` fixture each case records what it injected and
what happened through (benchmarks/reliability_report.py turns those records into the table), a TCP
proxy that drops or delays connections to a real S3 endpoint, and helpers to audit a store for releases
whose objects are missing."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from edgedistill.errors import EdgeDistillError
from edgedistill.io import sha256_file
from edgedistill.release.store import SUMS, Store, parse_sums

PROPERTY = "reliability"


# ---------------------------------------------------------------- what each case records


class Outcome:
    """One row of the reliability table. Values go into pytest's user_properties, so they reach the
    report plugin whether the case passes or fails."""

    def __init__(self, record: Callable[[str, object], None]):
        self._record = record

    def fault(self, case: str, injected: int = 1) -> None:
        self._record(PROPERTY, {"kind": "fault", "case": case, "injected": injected})

    def bad_input(self, case: str) -> None:
        self._record(PROPERTY, {"kind": "bad input", "case": case})

    def inputs(self, tried: int, rejected: int) -> None:
        """Bad inputs tried and how many were rejected with a clear error (the rest must have been
        accepted as valid: never a crash)."""
        self._record(PROPERTY, {"tried": tried, "rejected": rejected})

    def happened(self, text: str) -> None:
        self._record(PROPERTY, {"happened": text})

    def releases_lost(self, n: int) -> None:
        self._record(PROPERTY, {"releases_lost": n})


@pytest.fixture(name="outcome")
def outcome_fixture(record_property) -> Outcome:
    """Import `outcome_fixture` into a test module to use the `outcome` fixture."""
    return Outcome(record_property)


def clear_error(e: BaseException) -> bool:
    """A user-facing failure: an EdgeDistillError with a one-line-or-more message naming the cause."""
    return isinstance(e, EdgeDistillError) and bool(str(e).strip())


# ---------------------------------------------------------------- releases lost


def broken_bundles(store: Store, model: str, versions: list[str]) -> list[str]:
    """Versions (registered, or pointed at) whose bundle in the store is absent, partial or does not
    match its SHA256SUMS: each one is a release lost."""
    import tempfile

    bad = []
    prefix = f"releases/{model}"
    for version in versions:
        try:
            sums = parse_sums(store.read_text(f"{prefix}/{version}/{SUMS}"), SUMS)
            with tempfile.TemporaryDirectory() as tmp:
                for name, digest in sums.items():
                    store.get_file(f"{prefix}/{version}/{name}", Path(tmp) / name)
                    if sha256_file(Path(tmp) / name) != digest:
                        raise ValueError(name)
        except (EdgeDistillError, ValueError):
            bad.append(version)
    return bad


# ---------------------------------------------------------------- a faulty network in front of S3


@dataclass
class FaultyProxy:
    """A TCP proxy on 127.0.0.1 in front of `upstream` (host, port). Each new client connection asks
    `policy` what to do: "pass", "drop" (accept, then close without a byte: a connection reset), or a
    float (delay that many seconds, then pass). Counts what it did."""

    upstream: tuple[str, int]
    policy: Callable[[int], str | float] = lambda n: "pass"
    connections: int = 0
    dropped: int = 0
    delayed: int = 0
    port: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _open: list[socket.socket] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultyProxy:
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._sock.close()
        self.cut()

    def cut(self, policy: Callable[[int], str | float] | None = None) -> None:
        """The endpoint dies now: open connections are reset; new ones get `policy` (default: drop)."""
        with self._lock:
            self.policy = policy or (lambda n: "drop")
            live, self._open = self._open, []
        for s in live:
            with contextlib.suppress(OSError):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            with self._lock:
                self.connections += 1
                action = self.policy(self.connections)
            threading.Thread(target=self._handle, args=(client, action), daemon=True).start()

    def _handle(self, client: socket.socket, action: str | float) -> None:
        if action == "drop":
            with self._lock:
                self.dropped += 1
            # RST instead of FIN: what a crashed endpoint or a dropping middlebox looks like
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()
            return
        if isinstance(action, (int, float)) and not isinstance(action, bool):
            with self._lock:
                self.delayed += 1
            time.sleep(float(action))
        try:
            upstream = socket.create_connection(self.upstream, timeout=30)
        except OSError:
            client.close()
            return
        with self._lock:
            self._open += [client, upstream]
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=_pump, args=(a, b), daemon=True).start()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


@contextlib.contextmanager
def faulty_proxy(
    endpoint: str, policy: Callable[[int], str | float] = lambda n: "pass"
) -> Iterator[FaultyProxy]:
    host, port = endpoint.removeprefix("http://").split(":")
    proxy = FaultyProxy((host, int(port)), policy).start()
    try:
        yield proxy
    finally:
        proxy.stop()
