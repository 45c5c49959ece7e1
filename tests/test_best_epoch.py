"""Best-epoch choice: ties in val accuracy (a small or saturated val split) go to the lower val loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgedistill.training import Split, TrainConfig, train


def test_a_tie_in_val_accuracy_keeps_the_lower_val_loss_not_the_earliest_epoch():
    # two classes a linear model separates at once: val accuracy saturates at 100 % within a few epochs
    # while the val loss keeps falling, so "first epoch at the best accuracy" would keep an early model
    g = torch.Generator().manual_seed(0)
    y = torch.arange(64) % 2
    x = (y.float() * 2 - 1).view(-1, 1, 1) * torch.ones(64, 2, 8) + 1.0 * torch.randn(64, 2, 8, generator=g)
    tr, va = Split(x[:48], y[:48], "train"), Split(x[48:], y[48:], "val")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    cfg = TrainConfig(epochs=12, batch_size=16, lr=0.01, weight_decay=0.0, schedule="constant")

    def ce(m, xb, yb, idx, gen):
        return F.cross_entropy(m(xb), yb)

    res = train(model, tr, va, ce, cfg, torch.device("cpu"), ["a", "b"], log=lambda s: None)
    hist = res.history
    best_acc = max(h["val_accuracy"] for h in hist)
    tied = [h for h in hist if h["val_accuracy"] == best_acc]
    assert best_acc == 1.0 and len(tied) > 1  # the case under test: a tie at the top
    lowest = min(tied, key=lambda h: h["val_loss"])
    assert res.best_epoch == lowest["epoch"] != tied[0]["epoch"]
    # the model left behind is that epoch's: its val loss is the recorded one
    with torch.no_grad():
        assert abs(F.cross_entropy(model(va.x), va.y).item() - lowest["val_loss"]) < 1e-4
