"""The data plane's one map: in process and on a Dask LocalCluster of worker processes, same results."""

from __future__ import annotations

import os

import pytest

from edgedistill.data.dataplane import run_map
from edgedistill.errors import DataInvalid, ParamsInvalid


def _square_and_pid(x: int) -> tuple[int, int]:
    if x < 0:
        raise DataInvalid(f"partition {x}: negative")
    return x * x, os.getpid()


def test_run_map_in_process_keeps_order() -> None:
    out = run_map(_square_and_pid, [3, 1, 2])
    assert [v for v, _ in out] == [9, 1, 4]
    assert {pid for _, pid in out} == {os.getpid()}


def test_run_map_on_local_cluster_uses_worker_processes_and_keeps_order() -> None:
    pytest.importorskip("distributed")
    items = list(range(8))
    out = run_map(_square_and_pid, items, address="local", workers=2)
    assert [v for v, _ in out] == [x * x for x in items]
    assert os.getpid() not in {pid for _, pid in out}  # ran in worker processes, not here


def test_run_map_reraises_the_task_error_unchanged() -> None:
    with pytest.raises(DataInvalid, match="partition -1: negative"):
        run_map(_square_and_pid, [1, -1])


def test_unreachable_scheduler_is_a_one_line_params_error() -> None:
    pytest.importorskip("distributed")
    with pytest.raises(ParamsInvalid, match="cannot reach the Dask scheduler"):
        run_map(_square_and_pid, [1], address="tcp://127.0.0.1:9", timeout_s=2)


def _count_and_pid(x: int) -> tuple[int, frozenset[int]]:
    return x, frozenset({os.getpid()})


def _merge_and_pid(
    a: tuple[int, frozenset[int]], b: tuple[int, frozenset[int]]
) -> tuple[int, frozenset[int]]:
    return a[0] + b[0], a[1] | b[1] | {os.getpid()}


def test_run_map_reduce_combines_on_the_workers() -> None:
    """In process, one fold; on Dask, the results are combined on the workers and one reaches us."""
    from edgedistill.data.dataplane import run_map_reduce

    items = list(range(1, 8))
    total, pids = run_map_reduce(_count_and_pid, items, _merge_and_pid)
    assert total == sum(items) and pids == {os.getpid()}
    pytest.importorskip("distributed")
    total, pids = run_map_reduce(_count_and_pid, items, _merge_and_pid, address="local")
    assert total == sum(items) and os.getpid() not in pids
    with pytest.raises(ValueError, match="no items"):
        run_map_reduce(_count_and_pid, [], _merge_and_pid)
