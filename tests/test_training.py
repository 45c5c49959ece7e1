"""train_teacher / teacher_logits / distill: real learning on small real data, KD loss properties, cache
reuse, resume after interruption, and the bad inputs."""

from __future__ import annotations

import contextlib
import copy
import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_TRAIN, make_params, merge

from edgedistill.errors import DataInvalid, ModelMismatch, ParamsInvalid, TrainingFailed
from edgedistill.shards import open_split, write_split
from edgedistill.train.checkpoint import load_checkpoint
from edgedistill.train.kd import hinton_loss, kd_kl
from edgedistill.train.training import resolve_device
from tasks import distill, prepare, teacher_logits, train_teacher

# one torch thread: the students train one after the other in this process (two spawned processes each
# import torch & co. for a one-epoch student); the side-by-side test asks for two threads itself
TINY = TINY_TRAIN


def tiny(extra: dict | None = None):
    return make_params(merge(TINY, extra or {}))


@pytest.fixture(scope="module")
def _bases(tmp_path_factory) -> dict:
    """Prepared windows and a trained teacher, made once per module; each test works in a copy."""
    from conftest import small_readings

    prepared = tmp_path_factory.mktemp("prepared")
    (prepared / "data/raw").mkdir(parents=True)
    small_readings().to_parquet(prepared / "data/raw/readings.parquet", index=False)
    with contextlib.chdir(prepared):
        prepare.run(tiny())
    trained = tmp_path_factory.mktemp("trained")
    shutil.copytree(prepared, trained, dirs_exist_ok=True)
    with contextlib.chdir(trained):
        m = train_teacher.run(tiny(), log=lambda s: None)
    return {"prepared": prepared, "trained": trained, "metrics": m}


@pytest.fixture
def prepared(readings_file, workdir, _bases):
    shutil.copytree(_bases["prepared"], workdir, dirs_exist_ok=True)
    return workdir


@pytest.fixture
def trained(readings_file, workdir, _bases):
    shutil.copytree(_bases["trained"], workdir, dirs_exist_ok=True)
    return workdir, copy.deepcopy(_bases["metrics"])


# ---------------------------------------------------------------- schedule in steps


def test_min_steps_gives_small_splits_more_epochs_never_fewer():
    from edgedistill.params import TrainParams
    from edgedistill.train.training import train_config

    tp = TrainParams(
        epochs=16, batch_size=128, lr=0.003, weight_decay=0.01, label_smoothing=0.1, min_steps=1000
    )
    said = []
    assert train_config(tp, 8744).epochs == 16  # 69 steps per epoch: 1,104 steps already
    assert train_config(tp, 100_000).epochs == 16
    cfg = train_config(tp, 418, said.append, "teacher")  # 4 steps per epoch
    assert cfg.epochs == 250 and said and "250 epochs (not 16)" in said[0]
    assert train_config(tp.model_copy(update={"min_steps": 0}), 418).epochs == 16


def test_teacher_trains_min_steps_and_sanity_checks_at_the_same_share(prepared, monkeypatch):
    """A tiny split (2 steps per epoch at batch 64) with epochs 1 and min_steps 6 trains 3 epochs; the
    majority-class check moves with the schedule (check_epoch 1 of 1 -> epoch 3 of 3)."""
    seen = []
    real = train_teacher.sanity_stop
    # the epoch-wise checks run for real; the end-of-training verdict (this 3-epoch smoke teacher is below the
    # 1-NN) is not what this test is about
    monkeypatch.setattr(
        train_teacher,
        "sanity_stop",
        lambda *a, **k: (
            seen.append(k.get("check_epoch")) or (None if k.get("final") else real(*a, **k))
        ),
    )
    n = len(open_split("data/prepared/train").y)
    steps = -(-n // 64)
    m = train_teacher.run(
        tiny(
            {
                "teacher": {"train": {"epochs": 1, "min_steps": 3 * steps}},
                "sanity": {"enabled": True, "check_epoch": 1},
            }
        ),
        log=lambda s: None,
    )
    assert m["epochs_run"] == 3
    assert seen and set(seen) == {3}


# ---------------------------------------------------------------- KD loss


def test_kd_loss_zero_when_student_equals_teacher():
    z = torch.randn(32, 7)
    assert kd_kl(z, z.clone(), 4.0).abs().item() < 1e-6
    y = torch.randint(0, 7, (32,))
    # with alpha=1 only the soft term remains → zero; with alpha=0 it is plain CE
    assert hinton_loss(z, z.clone(), y, 4.0, 1.0).abs().item() < 1e-6
    assert torch.isclose(hinton_loss(z, torch.randn(32, 7), y, 4.0, 0.0), F.cross_entropy(z, y))


def test_kd_loss_is_t_squared_scaled_kl():
    s, t = torch.randn(16, 7), torch.randn(16, 7)
    for temp in (1.0, 2.0, 4.0):
        p_t = F.softmax(t / temp, -1)
        manual = (p_t * (p_t.log() - F.log_softmax(s / temp, -1))).sum(-1).mean() * temp**2
        assert torch.isclose(kd_kl(s, t, temp), manual, atol=1e-5)
    # T² keeps the soft-target gradient from vanishing as T grows (Hinton et al.)
    grads = []
    for temp in (2.0, 8.0):
        s_ = s.clone().requires_grad_(True)
        kd_kl(s_, t, temp).backward()
        grads.append(s_.grad.norm().item())
    assert 0.1 < grads[1] / grads[0] < 10


# ---------------------------------------------------------------- learning


def test_teacher_learns_and_writes_outputs(trained):
    workdir, m = trained
    assert m["accuracy"] > 0.45  # 7 classes: chance is 0.14
    curve = (workdir / "metrics/plots/teacher_curve.csv").read_text().splitlines()
    losses = [float(r.split(",")[1]) for r in curve[1:]]
    assert losses[-1] < losses[0]
    model, meta = load_checkpoint(workdir / "models/teacher.pt")
    assert meta["window"] == 64 and meta["in_channels"] == 6 and len(meta["norm"]["mean"]) == 6
    saved = json.loads((workdir / "metrics/teacher.json").read_text())
    assert saved["params"] == sum(p.numel() for p in model.parameters()) and saved["macs"] > 0


def test_distill_reports_baseline_kd_and_gain(trained):
    workdir, _ = trained
    teacher_logits.run(tiny())
    r = distill.run(tiny(), log=lambda s: None)
    for k in ("teacher", "baseline", "kd"):
        assert r[k]["accuracy"] > 0.3, k
    assert r["kd_gain"] == pytest.approx(r["kd"]["accuracy"] - r["baseline"]["accuracy"], abs=1e-5)
    for k in (
        "kd_gain",
        "kd_gain_val",
        "teacher",
        "baseline",
        "kd",
    ):  # every figure carries its interval
        node, key = (r, k) if k.startswith("kd_gain") else (r[k], "accuracy")
        assert node[f"{key}_lo"] <= node[key] <= node[f"{key}_hi"], k
    assert r["kd"]["params"] == r["baseline"]["params"] < r["teacher"]["params"]
    # the shipped student is chosen on the paired VALIDATION gain; the KD checkpoint is always kept
    assert r["shipped"] == ("kd" if r["kd_gain_val"] > 0 else "baseline")
    _, kd_meta = load_checkpoint(workdir / "models/student_kd.pt")
    assert kd_meta["distill"]["method"] == "fm_bank"
    shipped, _ = load_checkpoint(workdir / "models/student.pt")
    same_as, _ = load_checkpoint(
        workdir / ("models/student_kd.pt" if r["shipped"] == "kd" else "models/student_baseline.pt")
    )
    assert all(
        torch.equal(a, b)
        for a, b in zip(shipped.state_dict().values(), same_as.state_dict().values(), strict=True)
    )
    assert (workdir / "models/student_baseline.pt").is_file()
    assert (
        (workdir / "metrics/plots/student_kd_confusion.csv")
        .read_text()
        .startswith("actual,predicted")
    )


def test_students_side_by_side_match_one_after_the_other(trained, tmp_path):
    """compute.threads 2 on CPU: the two students train at once in two one-thread processes, with the same
    weights and figures as one after the other at one thread; a worker's error reaches the stage whole."""
    workdir, _ = trained
    teacher_logits.run(tiny())
    lines: list[str] = []
    outs = {}
    for mode, threads in (("side", 2), ("serial", 1)):
        p = tiny({"compute": {"threads": threads}})
        assert distill.side_by_side_threads(p, torch.device("cpu")) == (1 if mode == "side" else 0)
        outs[mode] = distill.run(
            p,
            student_out=tmp_path / f"{mode}_s.pt",
            baseline_out=tmp_path / f"{mode}_b.pt",
            kd_out=tmp_path / f"{mode}_kd.pt",
            metrics_out=tmp_path / f"{mode}.json",
            plots_dir=None,
            resume_dir=tmp_path / f"{mode}_res",
            log=lines.append if mode == "side" else lambda s: None,
        )
    assert any("side by side, 1 thread(s) each" in s for s in lines)
    assert any(
        s.startswith("student_kd") and "epoch" in s for s in lines
    )  # the workers' progress reached log
    for name in ("b", "kd"):
        a, _ = load_checkpoint(tmp_path / f"side_{name}.pt")
        b, _ = load_checkpoint(tmp_path / f"serial_{name}.pt")
        assert all(
            torch.equal(x, y)
            for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
        )
    for k in ("baseline", "kd"):
        assert outs["side"][k]["accuracy"] == outs["serial"][k]["accuracy"]
    assert outs["side"]["kd_gain_val"] == outs["serial"]["kd_gain_val"]
    assert outs["side"]["students_trained"] == {
        "device": "cpu",
        "side_by_side": True,
        "threads_each": 1,
    }
    assert outs["serial"]["students_trained"] == {
        "device": "cpu",
        "side_by_side": False,
        "threads_each": 1,
    }
    assert (
        distill.side_by_side_threads(
            tiny({"compute": {"threads": 2, "parallel_students": False}}), torch.device("cpu")
        )
        == 0
    )
    # a KD student that cannot start (its views are not the cached bank's) fails the stage with its own
    # message and hint, raised in the worker process
    with pytest.raises(ModelMismatch, match="differs from the cached one") as err:
        distill.run(
            tiny({"student": {"augment": {"jitter": 0.2}}, "compute": {"threads": 2}}),
            plots_dir=None,
            resume_dir=tmp_path / "bad",
            log=lambda s: None,
        )
    assert err.value.hint == "Run `dvc repro teacher_logits`."


def test_cached_logits_are_used_and_checked(trained):
    workdir, _ = trained
    teacher_logits.run(tiny())
    cache = {k: np.load(workdir / f"models/teacher_logits/{k}.npy") for k in ("plain", "bank")}
    teacher, _ = load_checkpoint(workdir / "models/teacher.pt")
    x = torch.from_numpy(open_split(workdir / "data/prepared", "train").load_all())
    with torch.no_grad():
        assert np.allclose(cache["plain"], teacher(x).numpy(), atol=1e-4)
    assert cache["bank"].shape == (2, len(x), 7)
    # hinton reads the cache: the loss equals the hand-made one on cached logits (clean student view)
    p = tiny({"distill": {"method": "hinton", "logit_augment": False}})
    from edgedistill.train.training import load_prepared

    data = load_prepared("data/prepared", torch.device("cpu"))
    fn = distill.kd_loss_fn(
        p, data, torch.device("cpu"), "models/teacher_logits", "models/teacher.pt"
    )
    student = torch.nn.Linear(64, 7)
    net = lambda xb: student(xb.mean(1))  # noqa: E731
    idx = torch.arange(8)
    want = hinton_loss(
        net(data.train.x[idx]), torch.from_numpy(cache["plain"][:8]), data.train.y[idx], 4.0, 0.7
    )
    assert torch.isclose(fn(net, data.train.x[idx], data.train.y[idx], idx, None), want)
    # logit_augment (default): the student sees the baseline's augmentation of the window, the teacher's
    # cached logits stay the clean window's
    from edgedistill.train.training import augment, augment_for

    p = tiny({"distill": {"method": "hinton"}})
    fn = distill.kd_loss_fn(
        p, data, torch.device("cpu"), "models/teacher_logits", "models/teacher.pt"
    )
    aug = augment_for(p.student.augment, p.data.vector_groups, data.norm)
    xa = augment(data.train.x[idx], aug, torch.Generator().manual_seed(5))
    want_aug = hinton_loss(
        net(xa), torch.from_numpy(cache["plain"][:8]), data.train.y[idx], 4.0, 0.7
    )
    got = fn(net, data.train.x[idx], data.train.y[idx], idx, torch.Generator().manual_seed(5))
    assert torch.isclose(got, want_aug) and not torch.isclose(got, want)
    # a bank made with other params is refused instead of silently mismatching views and logits
    with pytest.raises(ModelMismatch, match="bank has 2 views"):
        distill.run(
            tiny({"distill": {"bank": {"views": 3}}}), log=lambda s: None, train_baseline=False
        )
    with pytest.raises(ModelMismatch, match="differs from the cached one"):
        distill.run(
            tiny({"student": {"augment": {"jitter": 0.2}}}),
            log=lambda s: None,
            train_baseline=False,
        )


def test_dkd_student_with_imu_rotation_learns(trained):
    """DKD on cached logits, teacher bank and students augmented with the IMU rotation, end to end."""
    extra = {"distill": {"method": "dkd"}, "student": {"augment": {"rotate": 30.0}}}
    teacher_logits.run(tiny(extra))
    r = distill.run(tiny(extra), log=lambda s: None)
    assert r["method"] == "dkd" and r["kd"]["accuracy"] > 0.3 and r["baseline"]["accuracy"] > 0.3


def test_resume_after_interruption_matches_uninterrupted(prepared, tmp_path):
    # two epochs: killed after the first, resumed for the second (LR schedule, optimiser and RNG
    # state all carried across the kill)
    two = tiny({"teacher": {"train": {"epochs": 2}}})
    ref = train_teacher.run(
        two,
        model_out=tmp_path / "ref.pt",
        metrics_out=tmp_path / "ref.json",
        plots_dir=None,
        resume_dir=tmp_path / "r1",
        log=lambda s: None,
    )

    def killer(msg: str) -> None:
        if "epoch 1/" in msg:
            raise KeyboardInterrupt  # what a kill between epochs looks like to the loop

    with pytest.raises(KeyboardInterrupt):
        train_teacher.run(
            two,
            model_out=tmp_path / "b.pt",
            metrics_out=tmp_path / "b.json",
            plots_dir=None,
            resume_dir=tmp_path / "r2",
            log=killer,
        )
    assert (tmp_path / "r2/teacher.pt").is_file() and not (tmp_path / "b.pt").exists()
    logs: list[str] = []
    again = train_teacher.run(
        two,
        model_out=tmp_path / "b.pt",
        metrics_out=tmp_path / "b.json",
        plots_dir=None,
        resume_dir=tmp_path / "r2",
        log=logs.append,
    )
    assert any("resuming from epoch 1" in s for s in logs)
    assert again["accuracy"] == ref["accuracy"]
    a, _ = load_checkpoint(tmp_path / "ref.pt")
    b, _ = load_checkpoint(tmp_path / "b.pt")
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k
    assert not (tmp_path / "r2/teacher.pt").exists()  # cleaned up after success


# ---------------------------------------------------------------- bad input


def test_missing_prepared_data(workdir):
    with pytest.raises(DataInvalid, match="data/prepared/norm.json: not found"):
        train_teacher.run(tiny())


def test_checkpoint_window_mismatch(trained, readings_file):
    prepare.run(tiny({"prepare": {"window": 32, "train_stride": 32, "eval_stride": 32}}))
    with pytest.raises(ModelMismatch, match="expects C=6 channels and W=64"):
        teacher_logits.run(tiny())


def _rewrite_train(change):
    """Rewrite the prepared train split through `change(arrays) -> arrays` (shards and index)."""
    import shutil

    sp = open_split("data/prepared", "train")
    z = change({"X": sp.load_all(), "y": sp.y, "group": sp.group, "recording": sp.recording})
    shutil.rmtree("data/prepared/train")
    write_split("data/prepared", "train", z["X"], z["y"], z["group"], z["recording"])


def test_class_absent_from_train(prepared):
    _rewrite_train(lambda z: {k: v[z["y"] != 3] for k, v in z.items()})
    with pytest.raises(DataInvalid, match=r"classes \['IR'\] have no training windows"):
        train_teacher.run(tiny())


def test_nan_loss_stops_with_clear_message(prepared):
    def nan(z):
        z["X"][:, 0, :] = np.nan
        return z

    _rewrite_train(nan)
    with pytest.raises(TrainingFailed, match="loss became nan at epoch 1"):
        train_teacher.run(tiny(), log=lambda s: None)
    assert not (prepared / "models/teacher.pt").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_requested_but_absent():
    with pytest.raises(ParamsInvalid, match="CUDA is not available"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"


def test_fm_bank_label_weight_mixes_the_labels_as_the_view_mixes_windows(trained):
    """mixing() names the partner window and weight each bank view was made with; with fm_label_weight the KD
    student's loss adds the labels' cross-entropy mixed the same way (and still learns)."""
    from edgedistill.train.bank import BankViews
    from edgedistill.train.training import Augment

    x = torch.randn(50, 3, 16)
    views = BankViews(x, 4, Augment(), 1.0, 7)
    v, idx = np.array([0, 1, 3, 2]), np.array([5, 9, 49, 0])
    j, lam = views.mixing(v, idx)
    want = lam[:, None, None] * x[idx].numpy() + (1 - lam[:, None, None]) * x[j].numpy()
    assert (
        np.allclose(views[v, idx].numpy(), want, atol=1e-6)
        and (lam >= 0.5).all()
        and (j != idx).any()
    )
    j0, lam0 = BankViews(x, 4, Augment(), 0.0, 7).mixing(v, idx)
    assert (j0 == idx).all() and (lam0 == 1).all()
    workdir, _ = trained
    teacher_logits.run(tiny())
    from edgedistill.train.training import build_from_params, load_prepared

    data = load_prepared("data/prepared", torch.device("cpu"))
    torch.manual_seed(0)
    model = build_from_params(
        "dscnn1d", {"widths": [8, 8], "kernel": 3}, int(data.train.x.shape[1]), len(data.labels)
    )
    idx = torch.arange(32)
    xb, yb = data.train.x[idx], data.train.y[idx]

    def loss(w: float) -> float:
        fn = distill.kd_loss_fn(
            tiny({"distill": {"fm_label_weight": w}}),
            data,
            torch.device("cpu"),
            "models/teacher_logits",
            "models/teacher.pt",
        )
        return float(fn(model, xb, yb, idx, torch.Generator().manual_seed(3)).detach())

    kl, ce = loss(0.0), loss(1.0)  # the same views (same generator): pure KL, pure mixed-label CE
    assert kl != pytest.approx(ce) and loss(0.5) == pytest.approx((kl + ce) / 2, rel=1e-5)
    # fm_label_input: window: the labels' term is the baseline's own loss on the baseline's augmentation of the
    # window (drawn after the bank view, from the same generator)
    from edgedistill.train.training import augment, augment_for

    p = tiny({"distill": {"fm_label_weight": 0.5, "fm_label_input": "window"}})
    fn = distill.kd_loss_fn(
        p, data, torch.device("cpu"), "models/teacher_logits", "models/teacher.pt"
    )
    got = float(fn(model, xb, yb, idx, torch.Generator().manual_seed(3)).detach())
    g = torch.Generator().manual_seed(3)
    torch.randint(0, 2, (len(idx),), generator=g)  # the bank view's draw (2 views)
    aug = augment_for(p.student.augment, p.data.vector_groups, data.norm)
    base = float(F.cross_entropy(model(augment(xb, aug, g)), yb).detach())
    assert got == pytest.approx((kl + base) / 2, rel=1e-5) and base != pytest.approx(ce)
    r = distill.run(tiny({"distill": {"fm_label_weight": 0.5}}), log=lambda s: None)
    assert r["kd"]["accuracy"] > 0.3


def test_bank_grows_so_the_kd_student_replays_each_view_at_most_max_repeats(trained):
    """bank.max_repeats: a small split trained for its step floor gets more views (teacher_logits writes them,
    distill trains on them); a cache sized for other params is refused."""
    from edgedistill.params import BankParams, TrainParams
    from edgedistill.train.bank import bank_size

    tp = TrainParams(
        epochs=30, batch_size=128, lr=0.01, weight_decay=0.0, label_smoothing=0.0, min_steps=2000
    )
    assert (
        bank_size(BankParams(views=8, max_repeats=4.0), tp, 8744) == 8
    )  # 30 x 69 x 128 / (8 x 8744) = 3.8
    assert (
        bank_size(BankParams(views=8, max_repeats=4.0), tp, 418) == 154
    )  # 500 epochs x 4 x 128 / (4 x 418)
    assert bank_size(BankParams(views=8, max_repeats=0.0), tp, 418) == 8
    workdir, _ = trained
    p = tiny({"distill": {"bank": {"views": 2, "max_repeats": 1.0}}})
    n = len(open_split("data/prepared/train").y)
    want = bank_size(p.distill.bank, p.student.train, n)
    assert want > 2
    assert teacher_logits.run(p)["views"] == want
    assert np.load(workdir / "models/teacher_logits/bank.npy", mmap_mode="r").shape[0] == want
    assert distill.run(p, log=lambda s: None)["kd"]["accuracy"] > 0.3
    with pytest.raises(ModelMismatch, match="views"):
        distill.run(
            tiny({"distill": {"bank": {"views": 2, "max_repeats": 0.5}}}), log=lambda s: None
        )


def test_shuffled_labels_trigger_the_sanity_stop(readings_file, workdir):
    from conftest import small_readings, write_readings

    df = small_readings()
    # every window-length block of readings gets a random class: the labels say nothing about the signal (shuffling
    # whole recordings would leave val windows of one recording correlated, and a handful of val recordings can
    # land above the majority class by luck whatever the teacher learnt)
    block = (
        df["recording"].astype(str) + ":" + (df.groupby("recording").cumcount() // 64).astype(str)
    )
    keys = block.unique()
    labels = np.random.default_rng(0).choice(sorted(df["label"].unique()), len(keys))
    df["label"] = block.map(dict(zip(keys, labels, strict=True)))
    write_readings(df, readings_file)
    params = tiny({"sanity": {"enabled": True}})
    prepare.run(params)
    with pytest.raises(
        TrainingFailed, match=r"sanity stop: the teacher is .*majority class \d+\.\d%.*labels"
    ):
        train_teacher.run(params, log=lambda s: None)
    assert not (
        workdir / "models/teacher.pt"
    ).exists()  # nothing half-judged is left for the next stage


def test_final_sanity_check_wants_balanced_accuracy_above_chance_whatever_the_class_shares():
    """At the end the best checkpoint's balanced val accuracy must beat chance (1/K) by chance_z standard errors:
    a teacher at chance per class is stopped even one window above the majority class, while a good teacher on
    5:1 imbalanced val windows passes (a margin over the majority class would have asked it for 95.8%)."""
    from edgedistill.params import SanityParams
    from edgedistill.train import baseline as bl

    sp = SanityParams()
    ref = {"knn_fft_val_accuracy": 0.15, "majority_val_accuracy": 0.214}
    # 84 val windows of 7 classes (18, 12, 12, 12, 12, 10, 8: majority 21.4%); a memoriser of shuffled labels
    # leaning to class 0: 14 of its 18 right and 1 of each other class, accuracy 20/84 = 23.8% > the majority class
    sizes = [18, 12, 12, 12, 12, 10, 8]
    shuffled = np.eye(7, dtype=int)
    shuffled[1:, 0] = np.array(sizes[1:]) - 1
    shuffled[0] = [14, 1, 1, 1, 1, 0, 0]
    assert shuffled.trace() == 20 and shuffled.sum() == 84
    bal, chance, se = bl.balanced_vs_chance(
        shuffled
    )  # (14/18 + 4/12 + 1/10 + 1/8) / 7 = 19.1%, bar 22.1%
    assert (
        chance == pytest.approx(1 / 7)
        and bal == pytest.approx(0.1909, abs=1e-3)
        and se == pytest.approx(0.0392, abs=1e-3)
    )
    with pytest.raises(
        TrainingFailed,
        match=r"no better than chance per class after 4 epochs.*balanced val accuracy",
    ):
        train_teacher.sanity_stop(
            sp,
            {**ref, "balanced_val_accuracy": bal, "chance_balanced": chance},
            4,
            0.238,
            84,
            4,
            final=True,
            check_epoch=3,
            chance_se=se,
        )
    imbalanced = np.array([[29, 1], [1, 5]])  # 30:6 val windows (majority 83.3%), accuracy 94.4%
    bal, chance, se = bl.balanced_vs_chance(imbalanced)
    assert bal == pytest.approx((29 / 30 + 5 / 6) / 2)
    train_teacher.sanity_stop(
        sp,
        {
            "knn_fft_val_accuracy": 0.8,
            "majority_val_accuracy": 30 / 36,
            "balanced_val_accuracy": bal,
            "chance_balanced": chance,
        },
        4,
        34 / 36,
        36,
        4,
        final=True,
        check_epoch=3,
        chance_se=se,
    )
    train_teacher.sanity_stop(
        sp, ref, 3, 0.226, 84, 4, check_epoch=3
    )  # one window above at epoch 3: goes on
    with pytest.raises(TrainingFailed, match="no better than the majority class after 3 epochs"):
        train_teacher.sanity_stop(sp, ref, 3, 0.214, 84, 4, check_epoch=3)


def test_sanity_stop_says_when_val_is_too_small_to_tell_from_chance():
    """Chinatown's 4 val windows (2 per class): a teacher right on all of them is still within 2 SE of chance, so
    the stop names the val size and how to grow it, not the model's likely faults."""
    from edgedistill.params import SanityParams
    from edgedistill.train import baseline as bl

    sp = SanityParams()
    bal, chance, se = bl.balanced_vs_chance(np.array([[2, 0], [0, 2]]))
    assert bal == 1.0 and 1.0 <= chance + sp.chance_z * se
    ref = {
        "knn_fft_val_accuracy": 0.75,
        "majority_val_accuracy": 0.5,
        "balanced_val_accuracy": bal,
        "chance_balanced": chance,
    }
    with pytest.raises(
        TrainingFailed, match=r"4 val windows are too few to tell the teacher from chance"
    ) as e:
        train_teacher.sanity_stop(
            sp, ref, 1000, 1.0, 4, 1000, final=True, check_epoch=3, chance_se=se
        )
    assert "likely causes" not in str(e.value) and "prepare.eval_stride" in e.value.hint
    # 12 val windows (6 per class) can show it: a perfect teacher passes, one at chance is stopped as before
    bal, chance, se = bl.balanced_vs_chance(np.array([[6, 0], [0, 6]]))
    train_teacher.sanity_stop(
        sp,
        {**ref, "balanced_val_accuracy": bal, "chance_balanced": chance},
        1000,
        1.0,
        12,
        1000,
        final=True,
        check_epoch=3,
        chance_se=se,
    )
    with pytest.raises(TrainingFailed, match="no better than chance per class"):
        train_teacher.sanity_stop(
            sp,
            {**ref, "balanced_val_accuracy": 0.5, "chance_balanced": chance},
            1000,
            0.5,
            12,
            1000,
            final=True,
            check_epoch=3,
            chance_se=se,
        )


def test_sanity_references_are_recorded_and_short_runs_not_judged(prepared):
    m = train_teacher.run(
        tiny({"sanity": {"enabled": True, "check_epoch": 2}, "teacher": {"train": {"epochs": 1}}}),
        log=lambda s: None,
    )  # 1 < 2
    s = m["sanity"]
    assert (
        s["judged"] is False and s["passed"] is None
    )  # a run shorter than check_epoch is not judged
    assert 0.5 < s["knn_fft_val_accuracy"] <= 1 and 0 < s["majority_val_accuracy"] < 0.5


def test_channels_last_twin_computes_and_trains_the_1d_net(prepared):
    """compute.channels_last: on CPU the nets train through a 2D channels-last twin that shares every
    parameter and buffer (the 1D net is what is saved and exported) and computes the same function; a run
    through it ends where the 1D run ends, up to float rounding."""
    from edgedistill.export import onnx_tools as ox
    from edgedistill.train.nets import build_model, channels_last_twin
    from edgedistill.train.training import TrainConfig, load_prepared, train

    data = load_prepared("data/prepared", torch.device("cpu"))
    x = data.val.x[:16]
    for arch, config in (
        ("dscnn1d", TINY["student"]["config"]),
        ("resnet1d", TINY["teacher"]["config"]),
    ):
        torch.manual_seed(0)
        net = build_model(arch, config, x.shape[1], len(data.labels)).eval()
        twin = channels_last_twin(net).eval()
        assert twin is not net and {id(p) for p in twin.parameters()} == {
            id(p) for p in net.parameters()
        }
        with torch.no_grad():
            assert torch.allclose(twin(x), net(x), atol=1e-5)
    runs = {}
    for cl in (False, True):
        torch.manual_seed(0)
        net = build_model("dscnn1d", TINY["student"]["config"], x.shape[1], len(data.labels))
        keys = list(net.state_dict())
        cfg = TrainConfig(epochs=2, batch_size=64, lr=0.02, weight_decay=0.0)
        res = train(
            net,
            data.train,
            data.val,
            lambda m, xb, yb, idx, gen: F.cross_entropy(m(xb), yb),
            cfg,
            torch.device("cpu"),
            data.labels,
            log=lambda s: None,
            channels_last=cl,
        )
        assert list(net.state_dict()) == keys and res.epochs_run == 2
        runs[cl] = (net.eval(), res)
    (a, ra), (b, rb) = runs[False], runs[True]
    assert (
        max(
            (a.state_dict()[k].float() - b.state_dict()[k].float()).abs().max().item() for k in keys
        )
        < 1e-3
    )
    assert abs(ra.best_val_accuracy - rb.best_val_accuracy) <= 2 / len(data.val)
    with torch.no_grad():
        assert (a(data.val.x[:]).argmax(1) == b(data.val.x[:]).argmax(1)).float().mean() >= 0.98
    # what is exported is the 1D net: the same graph as a net that never trained through the twin
    ops = [n.op_type for n in ox.export_onnx(b, x.shape[1], x.shape[2], 18, what="cl").graph.node]
    assert ops.count("Conv") == 7 and ops.count("ReduceMean") == 1 and "Unsqueeze" not in ops


class _Payload:
    """A pickle that would run code when unpickled by torch.load(weights_only=False)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_resume_file_is_loaded_weights_only(prepared, tmp_path):
    """A planted resume file cannot run code: it is refused as not a plain checkpoint and training starts over."""
    marker = tmp_path / "pwned"
    (tmp_path / "res").mkdir()
    torch.save({"key": "x", "payload": _Payload(marker)}, tmp_path / "res" / "teacher.pt")
    logs: list[str] = []
    m = train_teacher.run(
        tiny(),
        model_out=tmp_path / "t.pt",
        metrics_out=tmp_path / "t.json",
        plots_dir=None,
        resume_dir=tmp_path / "res",
        log=logs.append,
    )
    assert not marker.exists()
    assert any("not a plain checkpoint" in s for s in logs) and not any(
        "resuming" in s for s in logs
    )
    assert m["accuracy"] > 0
