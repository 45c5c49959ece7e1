"""teacher.kind: the MiniRocket teacher (edgedistill.train.rocket) learns on small real data, gives logits for the
bank's augmented views, exports to ONNX like the CNN; auto keeps the candidate (cnn, minirocket or their ensemble)
with the lowest val cross-entropy."""

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


def test_auto_keeps_the_candidate_with_the_best_val_figures(prepared):
    p = tiny({"teacher": {"kind": "auto"}})
    m = train_teacher.run(p, log=lambda s: None)
    cands = m["choice"]["candidates"]
    assert list(cands) == ["cnn", "minirocket", "ensemble"]
    best = min(cands, key=lambda k: (cands[k]["val_loss"], -cands[k]["val_accuracy"]))
    assert m["kind"] == best and m["val_accuracy"] == cands[best]["val_accuracy"]
    assert all(c["val_loss"] > 0 for c in cands.values())
    assert cands["ensemble"]["arch"] == "ensemble"
    assert (
        "val" in m["choice"]["rule"]
        and json.loads(open("metrics/teacher.json").read())["kind"] == best
    )
    _, meta = load_checkpoint("models/teacher.pt")
    assert meta["arch"] == cands[best]["arch"]


def test_kind_ensemble_keeps_the_ensemble_and_its_logits_feed_the_bank(prepared):
    p = tiny({"teacher": {"kind": "ensemble"}})
    m = train_teacher.run(p, log=lambda s: None)
    assert m["kind"] == "ensemble" and m["arch"] == "ensemble"
    assert m["choice"]["rule"] == "teacher.kind: ensemble"
    assert m["val_accuracy"] == m["choice"]["candidates"]["ensemble"]["val_accuracy"]
    out = teacher_logits.run(p)
    bank = np.load("models/teacher_logits/bank.npy")
    assert bank.shape[0] == out["views"] and np.isfinite(bank).all()
    # log of mean probabilities: each row's probabilities sum to one
    assert np.allclose(np.exp(bank[0]).sum(1), 1.0, atol=1e-4)


def test_the_ensemble_teacher_is_its_members_mean_probabilities_and_reloads(prepared, tmp_path):
    from edgedistill.train.checkpoint import save_checkpoint
    from edgedistill.train.nets import build_model

    p = tiny()
    data = load_prepared("data/prepared", torch.device("cpu"))
    aug = train_teacher.augment_for(p.teacher.augment, p.data.vector_groups, data.norm)
    dev, quiet = torch.device("cpu"), lambda s: None
    trained = {
        "cnn": train_teacher.train_cnn(p, data, aug, dev, {}, tmp_path / "r", quiet),
        "minirocket": train_teacher.train_minirocket_teacher(
            p, data, aug, dev, {}, tmp_path / "r", quiet
        ),
    }
    ens = train_teacher.ensemble_of(trained, data)
    x = data.val.x[:]
    with torch.no_grad():
        probs = [torch.softmax(train_teacher.predict(t.model, x), 1) for t in trained.values()]
        got = torch.softmax(train_teacher.predict(ens.model, x), 1)
    torch.testing.assert_close(got, (probs[0] + probs[1]) / 2, atol=1e-5, rtol=1e-4)
    assert ens.result.best_val_accuracy == float((got.argmax(1) == data.val.y).float().mean())
    # a checkpoint of it rebuilds the same function (teacher_logits, export)
    save_checkpoint(tmp_path / "t.pt", ens.model, ens.meta)
    net, meta = load_checkpoint(tmp_path / "t.pt")
    assert meta["arch"] == "ensemble" and [m["arch"] for m in meta["config"]["members"]] == [
        "resnet1d",
        "minirocket",
    ]
    with torch.no_grad():
        torch.testing.assert_close(net.net(x), ens.model.eval()(x))
    assert isinstance(build_model("ensemble", meta["config"], 6, 7), torch.nn.Module)


def test_choice_rule_looks_at_val_only_lowest_cross_entropy_first():
    choose = train_teacher.choose_teacher
    acc = {"cnn": 0.90, "minirocket": 0.85, "ensemble": 0.88}
    assert choose(acc, {"cnn": 0.3, "minirocket": 0.2, "ensemble": 0.25}) == "minirocket"
    assert choose(acc, {"cnn": 0.3, "minirocket": 0.4, "ensemble": 0.25}) == "ensemble"
    # equal cross-entropy: the higher val accuracy, then the first listed (the CNN)
    assert choose(acc, {"cnn": 0.2, "minirocket": 0.2, "ensemble": 0.2}) == "cnn"
    assert choose({"cnn": 0.8, "minirocket": 0.9}, {"cnn": 0.2, "minirocket": 0.2}) == "minirocket"
    assert choose({"cnn": 0.9, "minirocket": 0.9}, {"cnn": 0.2, "minirocket": 0.2}) == "cnn"


def test_teacher_kind_params_are_validated():
    with pytest.raises(ParamsInvalid, match="teacher.kind"):
        make_params({"teacher": {"kind": "rocket"}})
    with pytest.raises(ParamsInvalid, match="teacher.minirocket.features"):
        make_params({"teacher": {"minirocket": {"features": 10}}})
    with pytest.raises(ParamsInvalid, match="teacher.minirocket.augment_copies"):
        make_params({"teacher": {"minirocket": {"augment_copies": -1}}})
    with pytest.raises(ParamsInvalid, match="teacher.minirocket.head"):
        make_params({"teacher": {"minirocket": {"head": "svm"}}})
    assert make_params({"teacher": {"kind": "ensemble"}}).teacher.kind == "ensemble"
    assert make_params().teacher.kind == "cnn"


def test_minirocket_pads_windows_shorter_than_its_kernels(readings_file, workdir):
    """Windows of 7 readings (JapaneseVowels' frames) are zero-padded to the kernels' 9, as aeon advises."""
    p = tiny(
        {
            "teacher": {"kind": "minirocket"},
            "prepare": {"window": 7, "train_stride": 7, "eval_stride": 7},
        }
    )
    prepare.run(p)
    m = train_teacher.run(p, log=lambda s: None)
    assert m["kind"] == "minirocket" and m["accuracy"] > 1 / 7
    net, meta = load_checkpoint("models/teacher.pt")
    assert meta["config"]["window"] == 7 and net.net.pad == 2
    with torch.no_grad():
        assert net(torch.zeros(3, 6, 7)).shape == (3, 7)


def _onnx_and_torch(m, x: torch.Tensor, tmp_path, what: str) -> tuple[np.ndarray, np.ndarray]:
    """`m` exported as the export stage exports a teacher, run by onnxruntime and by PyTorch on `x`."""
    from edgedistill.export import onnx_tools as ox

    m.eval()
    proto = ox.export_onnx(m, x.shape[1], x.shape[2], 18, what=what)
    ox.conv1d_as_conv2d(proto)
    ox.save_onnx(proto, tmp_path / "t.onnx")
    got = ox.predict(ox.open_session(tmp_path / "t.onnx"), tmp_path / "t.onnx", x.numpy())
    with torch.no_grad():
        ref = m(x).numpy()
    return got, ref


def _fitted_rocket(x: torch.Tensor, n_fit: int, weight_std: float, g, **kw) -> MiniRocketNet:
    """A MiniRocket net with biases and standardisation from x[:n_fit] and a random head of `weight_std`."""
    m = MiniRocketNet(x.shape[1], 4, x.shape[2], **kw)
    m.fit_biases(x[:n_fit])
    with torch.no_grad():
        f = m.transform(x[:n_fit])
        m.mean.copy_(f.mean(0))
        m.scale.copy_(f.std(0).clamp_min(1e-3))
        m.head.weight.normal_(0, weight_std, generator=g)
    return m


def test_minirocket_teacher_exports_to_onnx_with_parity(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(120, 3, 48, generator=g).cumsum(-1)
    m = _fitted_rocket(x, 80, 0.05, g, features=420)
    got, ref = _onnx_and_torch(m, x[80:], tmp_path, "minirocket")
    assert np.abs(got - ref).max() < 1e-4


def test_ensemble_teacher_of_short_windows_exports_to_onnx_with_parity(tmp_path):
    """The ensemble (a CNN and a MiniRocket net on 7-reading windows, zero-padded to 9) as teacher.onnx."""
    from edgedistill.train.nets import build_model

    g = torch.Generator().manual_seed(1)
    x = torch.randn(60, 3, 7, generator=g).cumsum(-1)
    members = [
        {"arch": "resnet1d", "config": {"widths": [8, 16], "kernel": 3, "dropout": 0.0}},
        {"arch": "minirocket", "config": {"window": 7, "features": 168, "seed": 0}},
    ]
    m = build_model("ensemble", {"members": members}, 3, 4)
    rocket = m.members[1]
    rocket.fit_biases(x[:40])
    with torch.no_grad():
        rocket.scale.copy_(rocket.transform(x[:40]).std(0).clamp_min(1e-3))
        rocket.head.weight.normal_(0, 0.5, generator=g)
    got, ref = _onnx_and_torch(m, x[40:], tmp_path, "ensemble")
    assert np.abs(got - ref).max() < 1e-4
    assert np.allclose(np.exp(ref).sum(1), 1.0, atol=1e-5)  # log of mean probabilities


def test_minirocket_features_are_the_same_in_onnxruntime(tmp_path):
    """PPV counts are step functions of the convolutions: a float rounding difference between PyTorch and
    onnxruntime at a bias moves a feature by 1/window. On the readings' grid the sums are exact, so a head
    with large weights (a calibrated, confident teacher) still gives the same logits."""
    g = torch.Generator().manual_seed(2)
    # readings of a sensor with a 0.1 resolution: many equal values, so convolution outputs tie with the
    # biases (drawn from them) and the order of a float sum decides `>`, unless the sums are exact
    x = torch.round(torch.randn(700, 3, 64, generator=g).cumsum(-1) * 2.5) / 10
    m = _fitted_rocket(
        x, 200, 3.0, g
    )  # large weights: a feature moved by 1/64 moves a logit by ~0.1-1
    got, ref = _onnx_and_torch(m, x[200:], tmp_path, "minirocket")
    assert np.abs(got - ref).max() < 1e-3 * max(1.0, np.abs(ref).max())


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


# both Gram forms (fewer windows than features, and more), windows left out one by one or by recording
@pytest.mark.parametrize("n,f", [(30, 50), (60, 20)])
@pytest.mark.parametrize("grouped", [False, True])
def test_ridge_left_out_scores_equal_refitting_without_each_window_or_recording(n, f, grouped):
    from edgedistill.train.rocket import ridge_loo

    g = torch.Generator().manual_seed(n)
    x = torch.randn(n, f, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (n,), generator=g)
    groups = np.arange(n) // 4 if grouped else None  # recordings of 4 windows
    w, b, alpha, loo = ridge_loo(x, y, 3, alphas=(0.1, 1.0, 10.0), groups=groups)
    t = -torch.ones(n, 3, dtype=torch.float64)
    t[torch.arange(n), y] = 1.0

    def fit(xs, ts):  # ridge with an unpenalised intercept, by the normal equations
        xm, tm = xs.mean(0), ts.mean(0)
        xc = xs - xm
        wf = torch.linalg.solve(xc.T @ xc + alpha * torch.eye(f, dtype=xs.dtype), xc.T @ (ts - tm))
        return wf, tm - xm @ wf

    wf, bf = fit(x, t)
    torch.testing.assert_close(w.double(), wf.T, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(b.double(), bf, atol=1e-4, rtol=1e-4)
    for i in (0, n // 2, n - 1):
        out = torch.from_numpy(groups == groups[i]) if grouped else torch.arange(n) == i
        wi, bi = fit(x[~out], t[~out])
        torch.testing.assert_close(loo[out].double(), x[out] @ wi + bi, atol=1e-4, rtol=1e-4)


def test_temperature_calibrates_scores():
    from edgedistill.train.rocket import fit_temperature

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4000, 4, generator=g) * 2.0
    y = torch.multinomial(torch.softmax(logits, 1), 1, generator=g).squeeze(1)
    # the labels were drawn from softmax(logits): scores 0.25 x the logits need a temperature of ~4
    assert fit_temperature(logits * 0.25, y) == pytest.approx(4.0, rel=0.1)


def test_temperature_stays_finite_when_every_prediction_was_right():
    from edgedistill.train.rocket import fit_temperature

    y = torch.arange(200) % 2
    scores = torch.stack(
        [1.0 - 2.0 * y, 2.0 * y - 1.0], 1
    ).float()  # ±1: all right, by a margin of 2
    tau = fit_temperature(scores, y)
    p = torch.softmax(tau * scores, 1).max(1).values
    # confident, not one-hot: the smoothed targets' 1 - 1/(2 (N + 2)) for 2 classes
    assert float(p.min()) == pytest.approx(1 - 1 / (2 * 202), abs=1e-4) and tau < 10
