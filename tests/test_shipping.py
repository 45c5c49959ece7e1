"""Which student file a profile ships: the `format: auto` rule and a bundle card's `ships` block
(bundles made before per-profile formats shipped INT8 everywhere)."""

from __future__ import annotations

from edgedistill.release.shipping import choose_format, manifest, profile_formats, shipped_file

P50 = {"fp32": 0.0124, "int8": 0.0167}


def test_auto_ships_the_faster_file_within_the_accuracy_tolerance():
    c = choose_format(
        "auto",
        measured=True,
        mcu=False,
        p50_ms=P50,
        accuracy={"fp32": 0.871, "int8": 0.875},
        tolerance=0.01,
    )
    assert c["chosen"] == "fp32" and "FP32 p50 12.4 µs < INT8 16.7 µs" in c["why"]
    slower_better = choose_format(
        "auto",
        measured=True,
        mcu=False,
        p50_ms=P50,
        accuracy={"fp32": 0.85, "int8": 0.875},
        tolerance=0.01,
    )
    assert slower_better["chosen"] == "int8" and "2.50 pts below INT8's" in slower_better["why"]
    tie = choose_format(
        "auto",
        measured=True,
        mcu=False,
        p50_ms={"fp32": 0.01, "int8": 0.01},
        accuracy={"fp32": 0.9, "int8": 0.9},
    )
    assert tie["chosen"] == "int8"  # equal speed: the smaller file


def test_forced_mcu_and_unmeasured_profiles():
    assert (
        choose_format(
            "int8", measured=True, mcu=False, p50_ms=P50, accuracy={"fp32": 1, "int8": 0}
        )["chosen"]
        == "int8"
    )
    assert choose_format("fp32", measured=False, mcu=False)["chosen"] == "fp32"
    assert choose_format("auto", measured=False, mcu=True)["chosen"] == "int8"
    assert "not measured" in choose_format("auto", measured=False, mcu=False)["why"]


def test_card_manifest_and_the_pre_format_bundle():
    bench = {
        "profiles": {
            "edge-cpu-1t": {"format": {"chosen": "fp32"}},
            "m4": {"format": {"chosen": "int8"}},
        }
    }
    card = {"ships": manifest(profile_formats(bench)), "release_profile": "edge-cpu-1t"}
    assert card["ships"]["edge-cpu-1t"] == {"format": "fp32", "file": "student.onnx"}
    assert (
        shipped_file(card, "edge-cpu-1t") == "student.onnx"
        and shipped_file(card, "m4") == "student.int8.onnx"
    )
    assert shipped_file(card) == "student.onnx"  # no profile: the release profile
    # a release made before per-profile formats: no `ships`, INT8 on every profile
    assert (
        shipped_file({"model": "student", "version": "v0.1.0"}, "edge-cpu-1t")
        == "student.int8.onnx"
    )
    assert (
        shipped_file(None) == "student.int8.onnx"
        and shipped_file(card, "unknown") == "student.int8.onnx"
    )
    assert profile_formats({"profiles": {"edge-cpu-1t": {"latency": {}}}}) == {
        "edge-cpu-1t": "int8"
    }
