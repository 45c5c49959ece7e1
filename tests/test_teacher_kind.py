"""teacher.kind: the MiniRocket teacher (edgedistill.train.rocket) learns on small real data, gives logits for the
bank's augmented views, exports to ONNX like the CNN; auto keeps the candidate with the higher val accuracy."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import make_params, merge

from edgedistill.errors import ParamsInvalid
from edgedistill.train.checkpoint import load_checkpoint
from edgedistill.train.rocket import MiniRocketNet, _ppv_compare, _ppv_sorted
from edgedistill.train.training import load_prepared
from tasks import prepare, teacher_logits, train_teacher

TINY = {
    "compute": {"device": "cpu", "threads": 2},
    "teacher": {
        "config": {"widths": [8, 16, 16], "kernel": 5, "dropout": 0.0},
        "train": {"min_steps": 0, "epochs": 3, "batch_size": 64, "lr": 0.01},
        # 336 features (4 per kernel): the published 10,000 cost seconds here for nothing a test needs
        "minirocket": {"features": 336, "epochs": 15, "augment_copies": 1},
    },
    "distill": {"bank": {"views": 2}},
    "sanity": {"enabled": False},
}


def tiny(extra: dict | None = None):
    return make_params(merge(TINY, extra or {}))


@pytest.fixture
def prepared(readings_file, workdir):
    prepare.run(tiny())
    return workdir


def test_ppv_by_sorting_equals_ppv_by_comparing():
    g = torch.Generator().manual_seed(0)
    conv = torch.randn(5, 42, 57, generator=g)
    bias = torch.randn(42, 7, generator=g)
    bias[0, 0] = conv[0, 0, 3]  # a tie: "above" is strict in both
    assert torch.equal(_ppv_sorted(conv, bias), _ppv_compare(conv, bias))


def test_minirocket_teacher_learns_and_gives_logits_for_the_bank_views(prepared):
    m = train_teacher.run(tiny({"teacher": {"kind": "minirocket"}}), log=lambda s: None)
    assert m["kind"] == "minirocket" and m["arch"] == "minirocket"
    assert m["choice"]["requested"] == "minirocket"
    assert list(m["choice"]["candidates"]) == ["minirocket"]
    assert m["accuracy"] > 1 / 7 + 0.2  # 7 activities: it learnt them, not the class shares
    model, meta = load_checkpoint("models/teacher.pt")
    assert meta["arch"] == "minirocket" and meta["config"]["window"] == 64
    out = teacher_logits.run(tiny({"teacher": {"kind": "minirocket"}}))
    bank = np.load("models/teacher_logits/bank.npy")
    plain = np.load("models/teacher_logits/plain.npy")
    assert (
        bank.shape == (out["views"], out["windows"], meta["n_classes"]) and np.isfinite(bank).all()
    )
    # the cached plain logits are the reloaded teacher's on the normalised train windows
    data = load_prepared("data/prepared", torch.device("cpu"))
    with torch.no_grad():
        ref = model.net(data.train.x[:]).numpy()
    np.testing.assert_allclose(plain, ref, atol=1e-4)
    # the views are augmented + mixed windows: their logits differ from the clean windows'
    assert np.abs(bank[0] - plain).max() > 1e-2


def test_auto_keeps_the_teacher_with_the_higher_val_accuracy(prepared):
    m = train_teacher.run(tiny({"teacher": {"kind": "auto"}}), log=lambda s: None)
    cands = m["choice"]["candidates"]
    assert set(cands) == {"cnn", "minirocket"}
    best = max(cands, key=lambda k: (cands[k]["val_accuracy"], k == "cnn"))
    assert m["kind"] == best and m["val_accuracy"] == cands[best]["val_accuracy"]
    assert all(c["val_loss"] > 0 for c in cands.values())
    assert (
        "val" in m["choice"]["rule"]
        and json.loads(open("metrics/teacher.json").read())["kind"] == best
    )
    _, meta = load_checkpoint("models/teacher.pt")
    assert meta["arch"] == cands[best]["arch"]


def test_choice_rule_looks_at_val_only_and_ties_keep_the_cnn():
    assert train_teacher.choose_teacher({"cnn": 0.80, "minirocket": 0.85}) == "minirocket"
    assert train_teacher.choose_teacher({"cnn": 0.90, "minirocket": 0.85}) == "cnn"
    assert train_teacher.choose_teacher({"cnn": 0.85, "minirocket": 0.85}) == "cnn"


def test_teacher_kind_params_are_validated():
    with pytest.raises(ParamsInvalid, match="teacher.kind"):
        make_params({"teacher": {"kind": "rocket"}})
    with pytest.raises(ParamsInvalid, match="teacher.minirocket.features"):
        make_params({"teacher": {"minirocket": {"features": 10}}})
    with pytest.raises(ParamsInvalid, match="teacher.minirocket.augment_copies"):
        make_params({"teacher": {"minirocket": {"augment_copies": -1}}})
    assert make_params().teacher.kind == "cnn"


def test_minirocket_refuses_windows_shorter_than_its_kernels(readings_file, workdir):
    p = tiny(
        {
            "teacher": {"kind": "minirocket"},
            "prepare": {"window": 8, "train_stride": 8, "eval_stride": 8},
        }
    )
    prepare.run(p)
    with pytest.raises(ParamsInvalid, match="at least 9 readings"):
        train_teacher.run(p, log=lambda s: None)


def test_minirocket_teacher_exports_to_onnx_with_parity(tmp_path):
    from edgedistill.export import onnx_tools as ox

    g = torch.Generator().manual_seed(0)
    x = torch.randn(120, 3, 48, generator=g).cumsum(-1)
    m = MiniRocketNet(3, 4, 48, features=420)
    m.fit_biases(x[:80])
    with torch.no_grad():
        f = m.transform(x[:80])
        m.mean.copy_(f.mean(0))
        m.scale.copy_(f.std(0).clamp_min(1e-3))
        m.head.weight.normal_(0, 0.05, generator=g)
    m.eval()
    proto = ox.export_onnx(m, 3, 48, 18, what="minirocket")
    ox.conv1d_as_conv2d(proto)
    ox.save_onnx(proto, tmp_path / "t.onnx")
    got = ox.predict(ox.open_session(tmp_path / "t.onnx"), tmp_path / "t.onnx", x[80:].numpy())
    with torch.no_grad():
        ref = m(x[80:]).numpy()
    assert np.abs(got - ref).max() < 1e-4


def test_model_card_names_the_teacher_and_why():
    from edgedistill.release.modelcard import teacher_text

    text = teacher_text(
        {
            "kind": "minirocket",
            "choice": {
                "requested": "auto",
                "rule": train_teacher.TEACHER_RULE,
                "candidates": {"cnn": {"val_accuracy": 0.9}, "minirocket": {"val_accuracy": 0.95}},
            },
        }
    )
    assert text.startswith("minirocket (teacher.kind: auto;")
    assert "cnn 90.00% val" in text and "minirocket 95.00% val" in text
    assert teacher_text(None) is None
