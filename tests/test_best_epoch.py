"""Best-epoch choice: a tie in val accuracy (a small or saturated val split) keeps the later epoch; patience
counts from the last rise of val accuracy."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgedistill.train.training import Split, TrainConfig, train


def _saturating_run(patience: int = 0, log=lambda s: None, live: bool | None = None):
    # two classes a linear model separates at once: val accuracy saturates within a few epochs and then ties
    # epoch after epoch, while the val loss RISES: one val window carries the other class's label, and the
    # growing confidence costs more on it every epoch (the case of GunPoint's 36 val windows, where the lowest
    # val loss among tied epochs picked mid-schedule teachers 1.3-5.3 points worse on test than the last ones)
    g = torch.Generator().manual_seed(0)
    y = torch.arange(64) % 2
    x = (y.float() * 2 - 1).view(-1, 1, 1) * torch.ones(64, 2, 8) + 1.0 * torch.randn(
        64, 2, 8, generator=g
    )
    yv = y[48:].clone()
    yv[0] = 1 - yv[0]
    tr, va = Split(x[:48], y[:48], "train"), Split(x[48:], yv, "val")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    cfg = TrainConfig(
        epochs=12, batch_size=16, lr=0.01, weight_decay=0.0, schedule="constant", patience=patience
    )

    def ce(m, xb, yb, idx, gen):
        return F.cross_entropy(m(xb), yb)

    return (
        model,
        va,
        train(model, tr, va, ce, cfg, torch.device("cpu"), ["a", "b"], log=log, live=live),
    )


def test_a_tie_in_val_accuracy_keeps_the_later_epoch():
    model, va, res = _saturating_run()
    hist = res.history
    best_acc = max(h["val_accuracy"] for h in hist)
    tied = [h for h in hist if h["val_accuracy"] == best_acc]
    assert best_acc == 15 / 16 and len(tied) > 2  # the case under test: a tie at the top
    # neither the earliest tied epoch nor the one of lowest val loss, where those differ from the last
    lowest = min(tied, key=lambda h: h["val_loss"])
    assert res.best_epoch == tied[-1]["epoch"] != tied[0]["epoch"]
    assert lowest["epoch"] != tied[-1]["epoch"]
    # the model left behind is that epoch's: its val loss is the recorded one
    with torch.no_grad():
        assert abs(F.cross_entropy(model(va.x), va.y).item() - tied[-1]["val_loss"]) < 1e-4


def test_patience_counts_from_the_last_rise_not_from_the_last_tie():
    logs: list[str] = []
    _, _, res = _saturating_run(patience=3, log=logs.append)
    hist = res.history
    first_best = next(
        h["epoch"] for h in hist if h["val_accuracy"] == max(h["val_accuracy"] for h in hist)
    )
    # the plateau of ties after the rise does not keep the run alive: it stops `patience` epochs later
    assert res.epochs_run == first_best + 3 < 12
    assert res.best_epoch == res.epochs_run  # and the kept weights are the last tied epoch's
    assert f"val accuracy last rose at epoch {first_best} " in logs[-1]
    assert f"keeping epoch {res.epochs_run}," in logs[-1]
