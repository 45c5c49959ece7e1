"""Training progress as a reader wants it: a live bar per model on a terminal, a few periodic lines where the
output is a log (Prefect, DVC, CI, a pipe), then one summary line per model. The full per-epoch history stays
in the metrics and plots files (TrainResult.history)."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import Any, TextIO

PERIODIC_LINES = (
    4  # lines per model where the output is not a terminal (the summary line comes on top)
)


def is_terminal(stream: TextIO | None) -> bool:
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False


class EpochProgress:
    """One model's epochs. `live` None: a bar when `stream` (stderr) is a terminal, else `lines` periodic
    lines through `log`; the summary line (`close`) always goes through `log`."""

    def __init__(
        self,
        name: str,
        total: int,
        log: Callable[[str], None],
        start: int = 0,
        live: bool | None = None,
        stream: TextIO | None = None,
        lines: int = PERIODIC_LINES,
    ):
        self.name, self.total, self.log = name, total, log
        stream = sys.stderr if stream is None else stream
        self.bar: Any = None
        if is_terminal(stream) if live is None else live:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total,
                initial=start,
                desc=name,
                unit="epoch",
                leave=False,
                file=stream,
                dynamic_ncols=True,
            )
        self.every = max(1, math.ceil(total / max(lines, 1)))

    def update(
        self,
        epoch: int,
        train_loss: float,
        val_accuracy: float,
        best_accuracy: float,
        best_epoch: int,
    ) -> None:
        if self.bar is not None:
            self.bar.update(epoch - self.bar.n)
            self.bar.set_postfix_str(
                f"val acc {val_accuracy:.4f}, best {best_accuracy:.4f} at {best_epoch}",
                refresh=True,
            )
        elif epoch % self.every == 0 and epoch < self.total:
            self.log(
                f"{self.name} epoch {epoch}/{self.total}: train loss {train_loss:.4f}, val acc "
                f"{val_accuracy:.4f} (best {best_accuracy:.4f} at epoch {best_epoch})"
            )

    def close(self, summary: str | None = None) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if summary:
            self.log(summary)


def summary_line(
    name: str,
    best_epoch: int,
    best_accuracy: float,
    epochs_run: int,
    total: int,
    stop: str | None,
    seconds: float,
) -> str:
    """`teacher: best epoch 31 (val acc 0.9412) of 40 run / 60 planned in 52s; early stop: …`."""
    ran = f"{epochs_run} run" if epochs_run == total else f"{epochs_run} run / {total} planned"
    return (
        f"{name}: best epoch {best_epoch} (val acc {best_accuracy:.4f}) of {ran} in {seconds:.0f}s; "
        + (f"early stop: {stop}" if stop else "no early stop")
    )
