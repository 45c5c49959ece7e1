"""Training progress: a bar on a terminal, a few periodic lines in a log (Prefect, DVC, CI), then one summary
line per model; every epoch stays in the history (metrics and plots files)."""

from __future__ import annotations

import io

from test_best_epoch import _saturating_run

from edgedistill.progress import PERIODIC_LINES, EpochProgress


def test_a_log_gets_a_few_periodic_lines_and_one_summary():
    lines: list[str] = []
    _, _, res = _saturating_run(
        patience=3, log=lines.append
    )  # stderr is pytest's capture: not a terminal
    assert len(res.history) == res.epochs_run < 12  # every epoch run is in the history
    periodic, summary = lines[:-1], lines[-1]
    assert 1 <= len(periodic) <= PERIODIC_LINES and all(
        " epoch " in s and "val acc" in s for s in periodic
    )
    assert summary.startswith(
        f"model: best epoch {res.best_epoch} (val acc {res.best_val_accuracy:.4f}) of "
        f"{res.epochs_run} run / 12 planned"
    )
    assert "early stop: at epoch" in summary and "patience 3" in summary


def test_a_full_run_says_it_did_not_stop_early():
    lines: list[str] = []
    _, _, res = _saturating_run(patience=0, log=lines.append)
    assert (
        res.epochs_run == len(res.history) == 12 and len(lines) <= PERIODIC_LINES + 1
    )  # was one line an epoch
    assert (
        lines[-1].startswith(f"model: best epoch {res.best_epoch} ") and "of 12 run in" in lines[-1]
    )
    assert lines[-1].endswith("no early stop")


def test_a_terminal_gets_a_bar_and_only_the_summary_line(capsys):
    lines: list[str] = []
    _, _, res = _saturating_run(log=lines.append, live=True)
    assert len(lines) == 1 and lines[0].startswith("model: best epoch")
    bar = capsys.readouterr().err
    assert (
        "model:" in bar and "12/12" in bar and "val acc" in bar
    )  # the bar ran to the last epoch, then went


def test_the_bar_follows_a_terminal_stream():
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    lines: list[str] = []
    tty, pipe = Tty(), io.StringIO()
    on_tty = EpochProgress("teacher", 8, lines.append, stream=tty)
    in_log = EpochProgress("teacher", 8, lines.append, stream=pipe)
    for e in range(1, 9):
        on_tty.update(e, 0.5, 0.9, 0.9, e)
        in_log.update(e, 0.5, 0.9, 0.9, e)
    on_tty.close()
    in_log.close()
    assert "8/8" in tty.getvalue() and pipe.getvalue() == ""
    assert lines == [
        f"teacher epoch {e}/8: train loss 0.5000, val acc 0.9000 (best 0.9000 at epoch {e})"
        for e in (2, 4, 6)
    ]
