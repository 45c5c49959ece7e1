"""Prepared windows as fixed-size shards per split, and the ONE reader every consumer uses.

Layout (written by the prepare stage, under data/prepared/):

    index.json                      per split: windows, shards (files, window counts, sha256), id tables
    <split>/index.json              the same for that split alone (a split folder is self-contained, so a
                                    stage can depend on data/prepared/test alone)
    <split>/X-00000.npy             float32 [n, C, W] raw readings (at most prepare.shard_windows windows)
    <split>/y-00000.npy             int64 [n] class index
    <split>/group-00000.npy         int32 [n] code into index.json splits.<split>.groups
    <split>/recording-00000.npy     int32 [n] code into index.json splits.<split>.recordings ("group/recording")

Every shard but the last of a split holds exactly `shard_windows` windows, so window i lives in shard
i // shard_windows. The bytes depend only on the windows and their order: the same windows give the same
checksums whichever engine (in process or Dask) cut them.

`open_split(prepared_dir, split)` memory-maps the X shards: `take(indices)` reads only the windows asked
for, `chunks(n)` walks the split in order; y and the id codes (a few bytes per window) are loaded whole.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgedistill.errors import DataInvalid
from edgedistill.io import read_json, sha256_file, write_json

INDEX = "index.json"
FORMAT = 1
ARRAYS = ("X", "y", "group", "recording")
HINT = "Run the prepare stage first (`dvc repro prepare`)."


class ShardWriter:
    """Append windows of one split in order; flushes a shard every `shard_windows` windows."""

    def __init__(self, root: str | Path, split: str, shard_windows: int):
        self.root, self.split, self.size = Path(root), split, int(shard_windows)
        (self.root / split).mkdir(parents=True, exist_ok=True)
        self.shards: list[dict[str, Any]] = []
        self.groups: dict[str, int] = {}
        self.recordings: dict[str, int] = {}
        self._buf: dict[str, list[np.ndarray]] = {k: [] for k in ARRAYS}
        self._n_buf = 0
        self.windows = 0
        self.shape: tuple[int, int] | None = None

    @staticmethod
    def _codes(table: dict[str, int], names: np.ndarray) -> np.ndarray:
        """Int codes of `names`, new names numbered in order of first appearance."""
        uniq, first, inv = np.unique(
            np.asarray(names).astype(str), return_index=True, return_inverse=True
        )
        code = np.empty(len(uniq), dtype=np.int32)
        for j in np.argsort(first, kind="stable"):
            code[j] = table.setdefault(str(uniq[j]), len(table))
        return code[inv.reshape(-1)]

    def add(self, x: np.ndarray, y: np.ndarray, group: np.ndarray, recording: np.ndarray) -> None:
        """Windows x [n, C, W] (float32), labels y [n], their group and `group/recording` ids (strings)."""
        if len(x) == 0:
            return
        if self.shape is None:
            self.shape = (int(x.shape[1]), int(x.shape[2]))
        g_codes = self._codes(self.groups, group)
        r_codes = self._codes(self.recordings, recording)
        pos = 0
        while pos < len(x):
            take = min(self.size - self._n_buf, len(x) - pos)
            sl = slice(pos, pos + take)
            self._buf["X"].append(np.asarray(x[sl], dtype=np.float32))
            self._buf["y"].append(np.asarray(y[sl], dtype=np.int64))
            self._buf["group"].append(g_codes[sl])
            self._buf["recording"].append(r_codes[sl])
            self._n_buf += take
            pos += take
            if self._n_buf == self.size:
                self._flush()

    def _flush(self) -> None:
        if self._n_buf == 0:
            return
        i = len(self.shards)
        entry: dict[str, Any] = {"windows": self._n_buf, "files": {}, "sha256": {}}
        for k in ARRAYS:
            rel = f"{self.split}/{k}-{i:05d}.npy"
            np.save(self.root / rel, np.ascontiguousarray(np.concatenate(self._buf[k])))
            entry["files"][k] = rel
            entry["sha256"][k] = sha256_file(self.root / rel)
            self._buf[k] = []
        self.windows += self._n_buf
        self._n_buf = 0
        self.shards.append(entry)

    def close(self) -> dict[str, Any]:
        """Flush the last (short) shard; the split's index entry."""
        self._flush()
        return {
            "windows": self.windows,
            "shards": self.shards,
            "groups": list(self.groups),
            "recordings": list(self.recordings),
        }


def write_index(
    root: str | Path,
    splits: dict[str, dict[str, Any]],
    channels: int,
    window: int,
    shard_windows: int,
) -> None:
    head = {
        "format": FORMAT,
        "channels": channels,
        "window": window,
        "shard_windows": shard_windows,
    }
    for name, entry in splits.items():
        write_json(Path(root) / name / INDEX, {**head, "splits": {name: entry}})
    write_json(Path(root) / INDEX, {**head, "splits": splits})


def write_split(
    root: str | Path,
    split: str,
    x: np.ndarray,
    y: np.ndarray,
    group: Any,
    recording: Any,
    shard_windows: int = 4096,
) -> None:
    """Write one split from arrays (small data, tests) and add it to the index."""
    root = Path(root)
    w = ShardWriter(root, split, shard_windows)
    w.add(x, y, np.asarray(group), np.asarray(recording))
    entry = w.close()
    index = read_json(root / INDEX) if (root / INDEX).is_file() else {"splits": {}}
    splits = {**index["splits"], split: entry}
    write_index(root, splits, int(x.shape[1]), int(x.shape[2]), shard_windows)


class ShardedSplit:
    """One prepared split, memory-mapped. `path` is `<prepared>/<split>` (named in errors)."""

    def __init__(self, root: Path, split: str, index: dict[str, Any]):
        self.root, self.split = root, split
        self.path = str(root / split)
        if split not in index.get("splits", {}):
            raise DataInvalid(f"{root / INDEX}: no split '{split}'", hint=HINT)
        self.entry = index["splits"][split]
        self.shard_windows = int(index["shard_windows"])
        self.channels, self.window = int(index["channels"]), int(index["window"])
        self.groups = np.array(self.entry["groups"], dtype=str)
        self.recordings = np.array(self.entry["recordings"], dtype=str)
        self._x: list[np.ndarray | None] = [None] * len(self.entry["shards"])
        try:
            ys, gs, rs = [], [], []
            for s in self.entry["shards"]:
                ys.append(np.load(root / s["files"]["y"]))
                gs.append(np.load(root / s["files"]["group"]))
                rs.append(np.load(root / s["files"]["recording"]))
        except (OSError, ValueError, KeyError) as e:
            raise DataInvalid(
                f"{self.path}: not a readable prepared split ({str(e)[:200]})", hint=HINT
            ) from None
        self.y = np.concatenate(ys) if ys else np.zeros(0, np.int64)
        self.group_codes = np.concatenate(gs) if gs else np.zeros(0, np.int32)
        self.recording_codes = np.concatenate(rs) if rs else np.zeros(0, np.int32)
        if len(self.y) != int(self.entry["windows"]):
            raise DataInvalid(
                f"{self.path}: index lists {self.entry['windows']} windows, shards hold {len(self.y)}",
                hint=HINT,
            )

    def __len__(self) -> int:
        return len(self.y)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self), self.channels, self.window)

    @property
    def recording(self) -> np.ndarray:
        """`group/recording` id of every window (the bootstrap resamples recordings)."""
        return self.recordings[self.recording_codes]

    @property
    def group(self) -> np.ndarray:
        return self.groups[self.group_codes]

    def fingerprint(self) -> str:
        """Content hash of the split (its shards' sha256s, in order)."""
        h = hashlib.sha256()
        for s in self.entry["shards"]:
            for k in ARRAYS:
                h.update(s["sha256"][k].encode())
        return h.hexdigest()

    def _shard(self, i: int) -> np.ndarray:
        x = self._x[i]
        if x is None:
            f = self.root / self.entry["shards"][i]["files"]["X"]
            try:
                x = np.load(f, mmap_mode="r")
            except (OSError, ValueError) as e:
                raise DataInvalid(
                    f"{f}: not a readable shard ({str(e)[:200]})", hint=HINT
                ) from None
            if x.ndim != 3 or x.shape[1:] != (self.channels, self.window):
                raise DataInvalid(
                    f"{f}: windows are {list(x.shape)}, index says [n, {self.channels}, {self.window}]"
                )
            self._x[i] = x
        return x

    def take(self, indices: Any) -> np.ndarray:
        """Windows at `indices` (any order), float32 [k, C, W]; reads only those windows' pages."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        out = np.empty((len(idx), self.channels, self.window), dtype=np.float32)
        if len(idx) == 0:
            return out
        if idx.min() < 0 or idx.max() >= len(self):
            raise IndexError(f"{self.path}: window index out of range 0..{len(self) - 1}")
        order = np.argsort(idx, kind="stable")
        s = idx[order]
        shard = s // self.shard_windows
        bounds = np.flatnonzero(np.diff(shard)) + 1
        for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, len(s)], strict=True):
            i = int(shard[lo])
            out[order[lo:hi]] = self._shard(i)[s[lo:hi] - i * self.shard_windows]
        return out

    def slice(self, start: int, stop: int) -> np.ndarray:
        start, stop = max(0, start), min(len(self), stop)
        return self.take(np.arange(start, stop)) if stop > start else self.take([])

    def chunks(self, size: int) -> Iterator[tuple[int, np.ndarray]]:
        """(start, X [n, C, W]) in window order."""
        for start in range(0, len(self), size):
            yield start, self.slice(start, start + size)

    def load_all(self) -> np.ndarray:
        """The whole split in memory: only for the small evaluation splits (test, val)."""
        return self.slice(0, len(self))


def read_index(prepared_dir: str | Path) -> dict[str, Any]:
    root = Path(prepared_dir)
    f = root / INDEX
    if not f.is_file():
        raise DataInvalid(f"{f}: prepared windows not found", hint=HINT)
    try:
        index = read_json(f)
    except ValueError as e:
        raise DataInvalid(f"{f}: not a readable index ({str(e)[:200]})", hint=HINT) from None
    if index.get("format") != FORMAT:
        raise DataInvalid(
            f"{f}: index format {index.get('format')!r}, expected {FORMAT}", hint=HINT
        )
    return index


def open_split(prepared_dir: str | Path, split: str | None = None) -> ShardedSplit:
    """A prepared split: `open_split("data/prepared", "test")`, or `open_split("data/prepared/test")`."""
    root = Path(prepared_dir)
    if split is None:
        root, split = root.parent, root.name
    own = root / split / INDEX
    return ShardedSplit(root, split, read_index(root if not own.is_file() else root / split))


def verify(prepared_dir: str | Path) -> None:
    """Every shard's bytes match its sha256 in the index (a damaged or swapped shard is named)."""
    root = Path(prepared_dir)
    for name, entry in read_index(root)["splits"].items():
        for s in entry["shards"]:
            for k in ARRAYS:
                f = root / s["files"][k]
                if not f.is_file() or sha256_file(f) != s["sha256"][k]:
                    raise DataInvalid(
                        f"{f}: shard of split '{name}' missing or changed (sha256 differs from "
                        f"{root / INDEX})",
                        hint=HINT,
                    )
