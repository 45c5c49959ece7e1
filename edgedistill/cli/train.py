"""CLI commands and summaries for the training stages (train_teacher, teacher_logits, distill)."""

from __future__ import annotations

from rich.table import Table

from edgedistill.cli.main import SUMMARIES, app, console, guarded, run_stage
from edgedistill.fmt import pct


def _teacher_summary(m: dict) -> None:
    console.print(
        f"teacher {m['arch']}: test accuracy {pct(m['accuracy'], 1)}, macro-F1 {m['macro_f1']:.3f}, "
        f"{m['params']:,} params, {m['macs']:,} MACs; best epoch {m['best_epoch']}/{m['epochs_run']}, "
        f"{m['train_seconds']:.0f}s on {m['device']} ({m['samples_per_s']:.0f} samples/s)"
    )


def _distill_summary(r: dict) -> None:
    t = Table(title=f"distillation ({r['method']}), test split")
    for col in ("model", "accuracy", "macro-F1", "params", "MACs", "epoch s"):
        t.add_column(col, justify="left" if col == "model" else "right")
    rows = [("teacher", r["teacher"])]
    if "baseline" in r:
        rows.append(("student alone", r["baseline"]))
    rows.append((f"student + KD ({r['method']})", r["kd"]))
    for name, m in rows:
        t.add_row(
            name,
            pct(m["accuracy"], 1),
            f"{m['macro_f1']:.3f}",
            f"{m['params']:,}",
            f"{m['macs']:,}",
            f"{m['epoch_seconds']:.2f}" if "epoch_seconds" in m else "—",
        )
    console.print(t)
    if "kd_gain" in r:
        console.print(
            f"KD gain (paired, 95% interval by recording): test {_gain(r, 'kd_gain')}, "
            f"validation {_gain(r, 'kd_gain_val')}; gap to teacher {100 * r['gap_to_teacher']:.1f} "
            f"points; KD epoch cost {r['kd_epoch_cost_ratio']:.2f}x a plain epoch"
        )
        console.print(
            f"{r['kd_verdict']} → ships the {'KD' if r['shipped'] == 'kd' else 'baseline'} student"
        )


def _gain(r: dict, key: str) -> str:
    if f"{key}_lo" not in r:
        return f"{100 * r[key]:+.1f} pts"
    return f"{100 * r[key]:+.1f} pts [{100 * r[key + '_lo']:+.1f}, {100 * r[key + '_hi']:+.1f}]"


SUMMARIES["train_teacher"] = _teacher_summary
SUMMARIES["teacher_logits"] = lambda r: console.print(
    f"teacher logits cached for {r['windows']:,} windows x {r['views']} bank views → {r['path']}"
)
SUMMARIES["distill"] = _distill_summary


@app.command("train-teacher")
def train_teacher() -> None:
    """Train the teacher (1D ResNet) on data/prepared; resumes from models/.resume after a kill."""
    from tasks import train_teacher as stage

    guarded(lambda: run_stage("train_teacher", stage.run))


@app.command("teacher-logits")
def teacher_logits() -> None:
    """Cache the teacher's logits on the train windows and on the bank of augmented views."""
    from tasks import teacher_logits as stage

    guarded(lambda: run_stage("teacher_logits", stage.run))


@app.command()
def distill() -> None:
    """Train the student alone (baseline) and with knowledge distillation; report the KD gain."""
    from tasks import distill as stage

    guarded(lambda: run_stage("distill", stage.run))
