"""The paired comparison with prod: the candidate's file and the file prod ships on the same profiles,
scored on the candidate's test windows (recording-bootstrap interval), after checking their ONNX input
contracts match."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pydantic import JsonValue

from edgedistill.io import read_json
from edgedistill.params import StatsParams
from edgedistill.records import (
    Difference,
    ProdComparison,
)
from edgedistill.release.candidate import CANDIDATE_INT8, PROD_CARD, PROD_DIR, TEST
from edgedistill.release.shipping import (
    FILES,
    LEGACY_FORMAT,
    shipped_file,
)
from edgedistill.shards import open_split
from edgedistill.stats import paired_difference

# ONNX metadata that fixes what a model must be fed: two models compare on the same windows only if equal
CONTRACT = ("channels", "window", "labels", "sample_rate_hz", "input_layout", "input_normalised")


def _contract(meta: dict[str, JsonValue]) -> dict[str, JsonValue]:
    out = {k: meta.get(k) for k in CONTRACT}
    if meta.get(
        "input_normalised", True
    ):  # normalised outside the graph: the statistics are the contract
        out["norm_mean"], out["norm_std"] = meta.get("norm_mean"), meta.get("norm_std")
    return out


def contract_difference(candidate: dict[str, JsonValue], prod: dict[str, JsonValue]) -> str | None:
    """What differs between two models' input contracts (ONNX metadata), or None."""
    a, b = _contract(candidate), _contract(prod)
    diffs = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if (
            isinstance(x, list)
            and isinstance(y, list)
            and len(x) == len(y)
            and x
            and all(isinstance(v, (int, float)) for v in x + y)
        ):
            same = np.allclose(x, y, rtol=1e-6, atol=1e-9)
        else:
            same = x == y
        if not same:
            diffs.append(f"{key} {_short(y)} (prod) vs {_short(x)} (candidate)")
    return "; ".join(diffs) or None


def _short(v: Any) -> str:
    text = str(v)
    return text if len(text) <= 60 else text[:57] + "..."


def compare_with_prod(
    prod_dir: str | Path = PROD_DIR,
    candidate: str | Path = CANDIDATE_INT8,
    test: str | Path = TEST,
    stats: StatsParams | None = None,
    profiles: list[str] | None = None,
) -> ProdComparison | None:
    """Score the candidate's file and the file prod ships on `profiles` (its card's `ships`; a
    bundle made before per-profile formats: INT8) on the candidate's test windows; the paired
    difference (candidate - prod) with its recording-bootstrap interval. None without a prod bundle.
    Where prod ships different files on those profiles, each is compared and the worst comparison
    (lowest paired difference; an incomparable one first) is returned, naming every file compared."""
    card_path = Path(prod_dir) / PROD_CARD
    card = read_json(card_path) if card_path.is_file() else None
    # a candidate without per-profile formats (no profiles): INT8, compared with prod's INT8
    names = (
        list(dict.fromkeys(shipped_file(card, p) for p in profiles))
        if profiles
        else [FILES[LEGACY_FORMAT]]
    )
    results = [
        r for r in (_compare_one(Path(prod_dir) / n, candidate, test, stats) for n in names) if r
    ]
    if not results:
        return None
    worst = min(results, key=lambda r: (r.comparable, r.difference.value if r.difference else 0.0))
    if len(results) > 1:
        return worst.model_copy(update={"prod_files": [r.prod_file for r in results]})
    return worst


def _compare_one(
    prod_model: Path, candidate: str | Path, test: str | Path, stats: StatsParams | None
) -> ProdComparison | None:
    from edgedistill.export import onnx_tools as ox

    if not prod_model.is_file():
        return None
    st = stats or StatsParams()
    differs = contract_difference(ox.read_metadata(candidate), ox.read_metadata(prod_model))
    if differs:
        return ProdComparison(
            comparable=False,
            prod_file=prod_model.name,
            reason=f"prod's input contract differs: {differs}",
        )
    if not Path(test).is_dir():
        return ProdComparison(
            comparable=False,
            prod_file=prod_model.name,
            reason=f"the candidate's test windows ({test}) are missing",
        )
    split = open_split(test)
    x, y, rec = split.load_all(), split.y, split.recording
    cand = ox.predict(ox.open_session(candidate), candidate, x).argmax(1)
    try:
        prev = ox.predict(ox.open_session(prod_model), prod_model, x).argmax(1)
    except Exception as e:  # noqa: BLE001 - any refusal of these windows is a contract difference
        return ProdComparison(
            comparable=False,
            prod_file=prod_model.name,
            reason=f"prod's model does not accept the candidate's windows ({e})",
        )
    d = paired_difference(
        cand, prev, y, rec, resamples=st.resamples, seed=st.seed, confidence=st.confidence
    )
    return ProdComparison(
        comparable=True,
        windows=int(len(y)),
        prod_file=prod_model.name,
        candidate_file=Path(candidate).name,
        candidate_accuracy=float((cand == y).mean()),
        prod_accuracy=float((prev == y).mean()),
        difference=Difference(value=round(d.value, 6), lo=round(d.lo, 6), hi=round(d.hi, 6)),
    )
