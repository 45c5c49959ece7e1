"""promote: check the candidate release against the gates in params (and against the current prod
version) and write reports/promotion.json with every gate's value, threshold, interval and verdict.

The registry itself is the flow's business: this stage reads metrics files, the prod reference file
the flow wrote (reports/prod_reference.json) and, when the flow fetched it, prod's shipped bundle in
models/prod/: per shipped format, the file prod ships on those profiles is scored beside the candidate's
on the candidate's test windows (a paired comparison), so "no regression" compares two models on the
same windows, not two figures from different test sets. Each profile's gates judge the file it ships
(metrics/benchmark.json profiles.<name>.format; INT8 everywhere for a file written before formats).
"""

from __future__ import annotations

from pathlib import Path

from edgedistill.errors import GateFailed
from edgedistill.params import Params
from edgedistill.records import ProdComparison, ProdReference, Promotion
from edgedistill.release.candidate import (
    BENCHMARK,
    CANDIDATE,
    MCU,
    PROD_DIR,
    PROD_REFERENCE,
    PROMOTION,
    SUMMARY,
    TEST,
    read_candidate,
    shipped_formats,
)
from edgedistill.release.gates import (
    decide_promotion,
    describe_failures,
    host_profile_rows,
    mcu_gate_rows,
)
from edgedistill.release.prodcompare import compare_with_prod
from edgedistill.release.release_metrics import release_metrics


def run(
    params: Params,
    reference: str | Path = PROD_REFERENCE,
    out: str | Path = PROMOTION,
    paths: dict[str, str] | None = None,
    mcu: str | Path = MCU,
    summary: str | Path = SUMMARY,
) -> Promotion:
    candidate = read_candidate(paths)
    prod = ProdReference.read_if(reference)
    if prod is not None and not prod.version:
        prod = None
    paths = paths or {}
    vs_prod: dict[str, ProdComparison | None] = {}
    if (
        prod is not None
    ):  # per shipped format: the candidate's file vs what prod ships on those profiles
        for fmt, profs in shipped_formats(candidate).items():
            vs_prod[fmt] = compare_with_prod(
                paths.get(PROD_DIR, PROD_DIR),
                paths.get(CANDIDATE[fmt], CANDIDATE[fmt]),
                paths.get(TEST, TEST),
                params.stats,
                profs,
            )
    decision = decide_promotion(
        candidate,
        params.promote.gates,
        prod,
        params.promote.fallback,
        vs_prod.get("int8"),
        vs_prod.get("fp32"),
    ).model_copy(update={"model": params.promote.model})
    bench = paths.get(BENCHMARK, BENCHMARK)
    decision = decision.with_rows(
        host_profile_rows(bench, params.benchmark.profiles)
        + mcu_gate_rows(mcu, params.promote.require_mcu_verified, params.promote.gates),
    )
    decision.write(out)  # written on failure too: it is the report of which gate failed
    release_metrics(decision).write(summary)
    if not decision.passed:
        raise GateFailed(
            f"promotion gate(s) failed: {describe_failures(decision)}",
            hint=f"Not promoted; see {out} for every gate. Previous versions are untouched.",
        )
    return decision


def main() -> None:
    from edgedistill.runner import run_stage_main

    run_stage_main("promote", lambda p: run(p))


if __name__ == "__main__":
    main()
