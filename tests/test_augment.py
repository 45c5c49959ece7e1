"""IMU augmentation (rotation of vector triplets in raw units, magnitude and time warping), DKD, and the
params that steer them: properties on real windows of the bundled data and on hand-made tensors."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import base_params_dict, make_params

from edgedistill.errors import ParamsInvalid
from edgedistill.params import parse_params
from edgedistill.train.kd import dkd_loss
from edgedistill.train.training import (
    Augment,
    augment,
    augment_for,
    random_rotations,
    rotation_note,
)


def norm_of(method: str, center: list[float], scale: list[float]) -> dict:
    chans = ["acc_x", "acc_y", "acc_z", "gyro_x", "gyro_y", "gyro_z", "temp"]
    return {
        "channels": chans,
        "window": 32,
        "normalization": {"method": method, "center": center, "scale": scale, "epsilon": 1e-6},
    }


def test_shift_is_a_fraction_of_the_window():
    """The time shift follows the window: the defaults' 0.125 is +-16 readings of 128, +-4 of 32 (a shift of 16
    readings would wrap half of a 32-reading window); params refuse a shift of half the window or more."""
    p = make_params({"student": {"augment": {"shift": 0.125}}})
    assert (
        augment_for(
            p.student.augment, [], {**norm_of("global", [0.0] * 7, [1.0] * 7), "window": 128}
        ).shift
        == 16
    )
    aug = augment_for(p.student.augment, [], norm_of("global", [0.0] * 7, [1.0] * 7))
    assert aug.shift == 4
    x = torch.arange(32.0).view(1, 1, 32).repeat(200, 1, 1)
    out = augment(
        x, dataclasses.replace(aug, scale=0.0, jitter=0.0), torch.Generator().manual_seed(0)
    )
    lag = (out[:, 0, 16] - x[:, 0, 16]).abs()  # middle reading: the shift itself, no wrap
    assert lag.max() == 4 and lag.min() == 0
    with pytest.raises(ParamsInvalid, match="shift is a fraction of prepare.window"):
        make_params({"student": {"augment": {"shift": 16}}})  # a params.yaml from before: readings
    with pytest.raises(ParamsInvalid, match="shift"):
        make_params({"student": {"augment": {"shift": 0.5}}})


def test_rotations_are_rotations_within_the_angle():
    r = random_rotations(500, 30.0, torch.Generator().manual_seed(0), torch.device("cpu"))
    eye = torch.eye(3).expand(500, 3, 3)
    assert torch.allclose(r @ r.transpose(1, 2), eye, atol=1e-5)
    assert torch.allclose(torch.linalg.det(r), torch.ones(500), atol=1e-5)
    angle = torch.rad2deg(torch.arccos(((r.diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2).clamp(-1, 1)))
    assert angle.max() <= 30.0 + 1e-3 and angle.max() > 25  # uses the range, never beyond it


def test_rotation_turns_raw_vectors_together_and_leaves_other_channels():
    """Windows are normalised per channel; the rotation must turn the RAW acc/gyro vectors (length kept per
    reading, the same rotation for both sensors of a window) and leave a channel outside the groups alone."""
    g = torch.Generator().manual_seed(1)
    center = [0.1, -0.5, 9.0, 0.0, 0.2, -0.1, 30.0]
    scale = [2.0, 0.5, 1.5, 3.0, 1.0, 0.7, 4.0]
    raw = torch.randn(64, 7, 32, generator=g) * 3
    ctr, sc = torch.tensor(center).view(1, 7, 1), torch.tensor(scale).view(1, 7, 1)
    x = (raw - ctr) / sc
    p = make_params(
        {"student": {"augment": {"scale": 0.0, "jitter": 0.0, "shift": 0, "rotate": 45.0}}}
    )
    aug = augment_for(p.student.augment, p.data.vector_groups, norm_of("global", center, scale))
    out = augment(x, aug, torch.Generator().manual_seed(2))
    back = out * sc + ctr
    for grp in ([0, 1, 2], [3, 4, 5]):
        assert torch.allclose(
            back[:, grp].norm(dim=1), raw[:, grp].norm(dim=1), rtol=1e-4, atol=1e-4
        )
        assert not torch.allclose(back[:, grp], raw[:, grp], atol=1e-2)
    assert torch.equal(out[:, 6], x[:, 6])
    # one rotation per window for both triplets: solve R from acc, it must map gyro too
    sol = torch.linalg.lstsq(raw[:, 0:3].transpose(1, 2), back[:, 0:3].transpose(1, 2)).solution
    assert torch.allclose(
        raw[:, 3:6].transpose(1, 2) @ sol, back[:, 3:6].transpose(1, 2), atol=1e-3
    )


def test_rotation_is_off_where_it_cannot_turn_raw_vectors_and_refuses_half_known_groups():
    """per_window windows (z-scored per window, amplitude channels added) cannot be turned: rotation off, no
    error, so `auto` choosing per_window on IMU data still trains; groups the data has none of (the bundled
    triplets left in params.yaml for other data) are ignored; a group the data has in part is refused."""
    p = make_params({"student": {"augment": {"rotate": 30.0}}})
    assert augment_for(
        p.student.augment, p.data.vector_groups, norm_of("global", [0.0] * 7, [1.0] * 7)
    ).rotating
    assert not augment_for(
        p.student.augment, p.data.vector_groups, norm_of("per_window", [0.0] * 7, [1.0] * 7)
    ).rotating
    assert not augment_for(p.student.augment, [], norm_of("global", [0.0] * 7, [1.0] * 7)).rotating
    assert not augment_for(
        p.student.augment, [["mag_x", "mag_y", "mag_z"]], norm_of("global", [0.0] * 7, [1.0] * 7)
    ).rotating
    with pytest.raises(ParamsInvalid, match="mag_z"):
        augment_for(
            p.student.augment,
            [["acc_x", "acc_y", "mag_z"]],
            norm_of("global", [0.0] * 7, [1.0] * 7),
        )
    # the stage logs why an asked-for rotation does nothing
    pw = norm_of("per_window", [0.0] * 7, [1.0] * 7)
    off = augment_for(p.student.augment, p.data.vector_groups, pw)
    assert rotation_note(p.student.augment, off, pw) == (
        "augment.rotate 30 is off: per_window normalisation cannot turn the raw vectors"
    )
    g = norm_of("global", [0.0] * 7, [1.0] * 7)
    assert "no data.vector_groups triplet" in rotation_note(
        p.student.augment, augment_for(p.student.augment, [["m1", "m2", "m3"]], g), g
    )
    assert (
        rotation_note(p.student.augment, augment_for(p.student.augment, p.data.vector_groups, g), g)
        == ""
    )


@pytest.mark.parametrize(
    "groups, msg",
    [
        ([["acc_x", "acc_y"]], "3 distinct channels"),
        (
            [["acc_x", "acc_y", "acc_z"], ["acc_z", "gyro_x", "gyro_y"]],
            "more than one vector group",
        ),
        (
            [["acc_x", "acc_y", "acc_q"]],
            r"data.vector_groups names channels not in data.channels: \['acc_q'\]",
        ),
    ],
)
def test_bad_vector_groups_are_refused(groups, msg):
    raw = base_params_dict()
    raw["data"]["vector_groups"] = groups
    raw["student"]["augment"]["rotate"] = 30.0
    with pytest.raises(ParamsInvalid, match=msg):
        parse_params(raw)


def test_vector_groups_naming_no_channel_are_refused_like_a_partial_match():
    """A user's own sensor columns with params.yaml's IMU groups left as they are: with rotation on, the groups
    name none of the data's channels, refused like a group the data has in part (the rotation would silently
    do nothing); with rotation off, or with vector_groups: [], the same data is accepted."""
    raw = base_params_dict()
    raw["data"]["channels"] = ["current"]
    raw["validate"]["channel_ranges"] = {}
    assert raw["teacher"]["augment"]["rotate"] > 0
    with pytest.raises(
        ParamsInvalid,
        match=r"vector_groups names channels not in data.channels: \['acc_x'.*"
        r"data.vector_groups: \[\] for data without 3-D vector sensors",
    ):
        parse_params(raw)
    raw["teacher"]["augment"]["rotate"] = raw["student"]["augment"]["rotate"] = 0.0
    assert parse_params(raw).data.vector_groups  # the groups are read only by the rotation
    raw["teacher"]["augment"]["rotate"] = 15.0
    raw["data"]["vector_groups"] = []
    p = parse_params(raw)
    norm = {
        "channels": ["current"],
        "window": 32,
        "normalization": {"method": "global", "center": [0.0], "scale": [1.0], "epsilon": 1e-6},
    }
    assert not augment_for(p.teacher.augment, p.data.vector_groups, norm).rotating


def test_warps_are_smooth_bounded_and_seeded():
    t = torch.linspace(0, 4 * math.pi, 128)
    x = torch.stack([t.sin(), t.cos()]).expand(16, 2, 128).contiguous()
    aug = Augment(time_warp=0.2, warp_knots=4)
    a = augment(x, aug, torch.Generator().manual_seed(3))
    assert torch.equal(a, augment(x, aug, torch.Generator().manual_seed(3)))
    assert torch.allclose(a[:, :, 0], x[:, :, 0]) and torch.allclose(
        a[:, :, -1], x[:, :, -1], atol=1e-4
    )
    assert a.abs().max() <= 1 + 1e-5 and (a - x).abs().max() > 0.05  # resampled, not rescaled
    m = augment(x, Augment(magnitude_warp=0.1, warp_knots=4), torch.Generator().manual_seed(3))
    gain = m / x.where(x.abs() > 0.3, torch.ones_like(x))
    gain = gain.where(x.abs() > 0.3, torch.ones_like(x))
    assert 0.5 < gain.min() and gain.max() < 1.5 and not torch.allclose(m, x)
    assert (m[:, :, 1:] / x[:, :, 1:] - m[:, :, :-1] / x[:, :, :-1]).where(
        x[:, :, 1:].abs() > 0.3, 0
    ).abs().max() < 0.1


def test_dkd_is_ce_when_student_matches_teacher_and_pulls_towards_it():
    z = torch.randn(32, 7)
    y = torch.randint(0, 7, (32,))
    assert torch.isclose(dkd_loss(z, z.clone(), y, 4.0, 1.0, 8.0), F.cross_entropy(z, y), atol=1e-5)
    t = torch.randn(32, 7) * 3
    s = torch.zeros(32, 7, requires_grad=True)
    opt = torch.optim.SGD([s], lr=0.5)
    first = None
    for _ in range(200):
        loss = dkd_loss(s, t, y, 4.0, 1.0, 8.0) - F.cross_entropy(s, y)  # the KD terms alone
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05 * first
    # NCKD ignores the target class: moving only the target logits leaves it unchanged (TCKD sees them)
    zt = t.clone()
    zt[torch.arange(32), y] += 5
    only_nckd = lambda a, b: dkd_loss(a, b, y, 4.0, 0.0, 1.0) - F.cross_entropy(a, y)  # noqa: E731
    assert torch.isclose(only_nckd(z, t), only_nckd(z, zt), atol=1e-5)


def test_bank_views_turn_the_raw_vectors_and_are_the_same_whichever_batch_asks():
    """The fm_bank student sees only the bank: its views get the rotation the baseline's views get (raw vector
    length kept per reading, both triplets turned by one rotation within the angle), drawn per (view, window)
    so a window's view does not depend on the batch; the bank's key changes with the angle (a cache made
    without rotation is refused)."""
    import numpy as np

    from edgedistill.train.bank import BankViews, bank_key

    g = torch.Generator().manual_seed(3)
    center = [0.1, -0.5, 9.0, 0.0, 0.2, -0.1, 30.0]
    scale = [2.0, 0.5, 1.5, 3.0, 1.0, 0.7, 4.0]
    raw = torch.randn(40, 7, 32, generator=g) * 3
    ctr, sc = torch.tensor(center).view(1, 7, 1), torch.tensor(scale).view(1, 7, 1)
    x = ((raw - ctr) / sc).numpy()
    p = make_params(
        {"student": {"augment": {"scale": 0.0, "jitter": 0.0, "shift": 0, "rotate": 30.0}}}
    )
    aug = augment_for(p.student.augment, p.data.vector_groups, norm_of("global", center, scale))
    bank = BankViews(x, 3, aug, 0.0, 5)  # no mixup: each view is one turned window
    idx = np.arange(40)
    view = bank.make(np.ones(40, dtype=np.int64), idx)
    back = view * sc + ctr
    for grp in ([0, 1, 2], [3, 4, 5]):
        assert torch.allclose(
            back[:, grp].norm(dim=1), raw[:, grp].norm(dim=1), rtol=1e-4, atol=1e-4
        )
    assert torch.equal(view[:, 6], torch.from_numpy(x[:, 6]))
    sol = torch.linalg.lstsq(
        raw[:, 0:3].transpose(1, 2), back[:, 0:3].transpose(1, 2)
    ).solution  # [n, 3, 3]
    assert torch.allclose(
        raw[:, 3:6].transpose(1, 2) @ sol, back[:, 3:6].transpose(1, 2), atol=1e-3
    )
    angle = torch.rad2deg(
        torch.arccos(((sol.diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2).clamp(-1, 1))
    )
    assert angle.max() <= 30.0 + 0.1 and angle.max() > 15 and angle.min() < 10
    # the same (view, window) in another batch, another order: the same bytes; another view: another turn
    some = np.array([7, 3, 31])
    assert torch.equal(bank.make(np.ones(3, dtype=np.int64), some), view[some])
    assert not torch.allclose(bank.make(np.full(40, 2), idx), view, atol=1e-3)
    # with every bank augmentation on, at 128 readings and a real centre: a fresh bank (as distill builds one
    # after teacher_logits) gives the same bytes for a window in batches of any size, and the noise is jitter-sized
    full = make_params(
        {"student": {"augment": {"scale": 0.1, "jitter": 0.05, "shift": 0.125, "rotate": 30.0}}}
    )
    wide = {**norm_of("global", center, scale), "window": 128}
    aug128 = augment_for(full.student.augment, full.data.vector_groups, wide)
    x128 = ((torch.randn(64, 7, 128, generator=g) * 3 - ctr) / sc).numpy()
    ref = BankViews(x128, 4, aug128, 1.0, 9).make(np.full(64, 3), np.arange(64))
    again = BankViews(x128, 4, aug128, 1.0, 9)
    for size in (1, 2, 5, 17, 40):
        pos = np.arange(64)[(np.arange(64) * 7 + size) % 64][:size]
        assert torch.equal(again.make(np.full(size, 3), pos), ref[pos]), size
    quiet = dataclasses.replace(aug128, rotate=0.0, scale=0.0, shift=0)
    noise = BankViews(x128, 4, quiet, 0.0, 9).make(
        np.zeros(64, dtype=np.int64), np.arange(64)
    ) - torch.from_numpy(x128)
    assert abs(float(noise.std()) - 0.05) < 0.002 and abs(float(noise.mean())) < 0.002
    flat = dataclasses.replace(aug, rotate=0.0)
    assert bank_key(3, aug, 0.0, 5, "t") != bank_key(3, flat, 0.0, 5, "t")
    assert torch.equal(
        BankViews(x, 3, flat, 0.0, 5).make(np.ones(40, dtype=np.int64), idx), torch.from_numpy(x)
    )
