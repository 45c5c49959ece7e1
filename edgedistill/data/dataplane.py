"""Where the data plane (validate / prepare work per partition) runs: in this process, or on Dask.

`data.dask_address` picks the engine, the same one the student sweep uses:
- null (default): in this process, one item after another (no Dask needed);
- "local": a Dask `LocalCluster` of `data.dask_workers` worker *processes* started for the call;
- "tcp://host:8786" (any scheduler address): that cluster.

Work is mapped with `run_map(fn, items, ...)`; results come back in the order of `items`, so a caller
that writes outputs in that order gets the same bytes whatever the engine (the fleet tests compare
checksums). `run_map_reduce(fn, items, combine, ...)` folds the results with an associative,
order-free `combine` (histogram counts, exact sums): on Dask the results are combined on the workers,
in a tree, and only the final one reaches the client. Callers pass `data.dask_address`,
`data.dask_workers`, `data.dask_timeout_s`, or an open `client` (dask_client) that several calls
share. `fn` must be a picklable top-level function; it gets one item and returns a picklable result.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from edgedistill.errors import ParamsInvalid

T = TypeVar("T")
R = TypeVar("R")


@contextmanager
def dask_client(address: str | None, workers: int = 2, timeout_s: float = 20.0) -> Iterator[Any]:
    """A `distributed.Client` for `address` ("local" = a LocalCluster of worker processes), or None when
    `address` is empty (run in process). The cluster started here is closed on exit."""
    if not address:
        yield None
        return
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ParamsInvalid(
            f"data.dask_address is {address!r} but dask.distributed is not installed",
            hint="pip install -e '.[dask]'",
        ) from None
    if address == "local":
        with (
            LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                # no dashboard, and the scheduler's /health, /metrics server on a free port: with the
                # default it takes 8787, warning "Port 8787 is already in use" beside another cluster
                scheduler_kwargs={"dashboard_address": ":0"},
            ) as cl,
            Client(cl) as client,
        ):
            yield client
        return
    try:
        client = Client(address, timeout=f"{timeout_s}s")
    except OSError as e:
        raise ParamsInvalid(
            f"data.dask_address {address!r}: cannot reach the Dask scheduler ({e})",
            hint="Start the scheduler, or set data.dask_address: null to run in process.",
        ) from None
    with client:
        yield client


def run_map(
    fn: Callable[[T], R],
    items: Iterable[T],
    address: str | None = None,
    workers: int = 2,
    client: Any = None,
    timeout_s: float = 20.0,
) -> list[R]:
    """`[fn(x) for x in items]`, in order, in process or on Dask (an open `client` wins over `address`).

    A task's exception is re-raised here unchanged (a DataInvalid naming a partition stays that error)."""
    items = list(items)
    if client is None and not address:
        return [fn(x) for x in items]
    if client is not None:
        return _gather(client, fn, items)
    with dask_client(address, workers, timeout_s) as c:
        return _gather(c, fn, items)


def run_map_reduce(
    fn: Callable[[T], R],
    items: Iterable[T],
    combine: Callable[[R, R], R],
    address: str | None = None,
    workers: int = 2,
    client: Any = None,
    timeout_s: float = 20.0,
) -> R:
    """`combine` over `[fn(x) for x in items]` (at least one item): in process, one result at a time; on
    Dask, pairwise on the workers (`combine` must be associative and not depend on the order: the tree's
    shape is the scheduler's), so the client receives one result, not one per item."""
    items = list(items)
    if not items:
        raise ValueError("run_map_reduce: no items")
    if client is None and not address:
        return functools.reduce(combine, (fn(x) for x in items))
    if client is not None:
        return _tree(client, fn, items, combine)
    with dask_client(address, workers, timeout_s) as c:
        return _tree(c, fn, items, combine)


def _tree(client: Any, fn: Callable[[T], R], items: list[T], combine: Callable[[R, R], R]) -> R:
    level = client.map(fn, items, pure=False)
    while len(level) > 1:
        pairs = zip(level[::2], level[1::2], strict=False)
        level = [client.submit(combine, a, b, pure=False) for a, b in pairs] + level[
            len(level) - len(level) % 2 :
        ]
    return level[0].result()


def _gather(client: Any, fn: Callable[[T], R], items: list[T]) -> list[R]:
    futures = client.map(fn, items, pure=False)
    return client.gather(futures)
