"""The records one stage or command writes and another reads (metrics/*.json, reports/promotion.json,
metrics/release.json, models/mcu/mcu.json, the model card, the channel document, reports/release.json):
one typed, versioned class each. Writers build a record and `write` it; readers `read` it back through the
same class, so a malformed file is one clear error naming it.

Files keep their paths and keys (users' scripts and `dvc metrics` read them); `schema_version` sits beside
them. Every record allows keys it does not declare (`extra="allow"`): a file written before a field existed
still loads, and a newer writer's extra field survives a read and a rewrite (docs/records.md).

Each leaf field declares what it is (`edgedistill.figures.Kind`: a model figure, a run-to-run timing or
text) in its JSON Schema (`"kind"`); `declaration(cls)` turns a record class into the declaration that
`reproduce` judges by. A class's `EXTRA` is the kind of the keys it does not declare (None: undeclared,
judged by name)."""

from __future__ import annotations

import json
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal, Self, TypeAlias, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError

from edgedistill.errors import ArtifactCorrupt
from edgedistill.figures import ANY, Declaration, Kind
from edgedistill.io import write_json

SCHEMA_VERSION = 1
Num: TypeAlias = int | float  # a figure that is an int or a float as written (an int stays an int)
Doc: TypeAlias = dict[str, Any]  # a block one record keeps whole, under one declared kind


def figure(kind: Kind, description: str = "", default: Any = None) -> Any:
    """A field and its kind (in its JSON Schema as `"kind"`)."""
    return Field(default, description=description or None, json_schema_extra={"kind": str(kind)})


def model_fig(description: str = "", default: Any = None) -> Any:
    return figure(Kind.MODEL, description, default)


def timing_fig(description: str = "", default: Any = None) -> Any:
    return figure(Kind.TIMING, description, default)


def text_fig(description: str = "", default: Any = None) -> Any:
    return figure(Kind.TEXT, description, default)


class Block(BaseModel):
    """A nested part of a record: declared keys typed, others kept as written."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)
    EXTRA: ClassVar[Kind | None] = None

    def dump(self) -> dict[str, JsonValue]:
        """The JSON object as written: declared keys that were set, then the others (no null filled in)."""
        return self.model_dump(exclude_unset=True, by_alias=True)


class Record(Block):
    """A file one stage or command writes and another reads."""

    PATH: ClassVar[str | None] = None  # where the pipeline keeps it (None: a store object)
    WHAT: ClassVar[str] = "record"
    schema_version: int = text_fig(
        "version of this record's layout (absent in files written before 1)", 1
    )

    # False: the file carries no schema_version key (metrics/release.json: `dvc metrics diff` sorts its keys
    # by name, and users read its figures first; it is versioned with its writer's reports/promotion.json)
    VERSION_IN_FILE: ClassVar[bool] = True

    def dump(self) -> dict[str, JsonValue]:
        rest = {k: v for k, v in super().dump().items() if k != "schema_version"}
        return {"schema_version": self.schema_version} | rest if self.VERSION_IN_FILE else rest

    def write(self, path: str | os.PathLike[str] | None = None) -> dict[str, JsonValue]:
        """Write atomically to `path` (default: the record's PATH); returns what was written."""
        doc = self.dump()
        write_json(path or self._path(), doc)
        return doc

    @classmethod
    def _path(cls) -> str:
        if cls.PATH is None:
            raise TypeError(f"{cls.__name__} has no default path")
        return cls.PATH

    @classmethod
    def parse(cls, doc: Any, source: str) -> Self:
        """`doc` (a JSON object already loaded) as this record, or one ArtifactCorrupt naming `source`."""
        try:
            return cls.model_validate(doc)
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or "(top level)"
            more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
            raise ArtifactCorrupt(
                f"{source}: not a valid {cls.WHAT}: {where}: {err['msg']}{more}",
                hint="Re-run the stage that writes it (`dvc repro`), or restore it from git.",
            ) from None

    @classmethod
    def parse_text(cls, data: str | bytes, source: str) -> Self:
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError) as e:
            raise ArtifactCorrupt(
                f"{source}: the {cls.WHAT} is not valid JSON ({e})",
                hint="Re-run the stage that writes it (`dvc repro`), or restore it from git.",
            ) from None
        return cls.parse(doc, source)

    @classmethod
    def read(cls, path: str | os.PathLike[str] | None = None) -> Self:
        p = Path(path or cls._path())
        try:
            data = p.read_bytes()
        except FileNotFoundError:
            raise ArtifactCorrupt(
                f"{p}: the {cls.WHAT} is missing",
                hint="Run the upstream stages first (`edgedistill run`).",
            ) from None
        return cls.parse_text(data, str(p))

    @classmethod
    def read_if(cls, path: str | os.PathLike[str]) -> Self | None:
        """The record at `path`, or None when there is no file."""
        return cls.read(path) if Path(path).is_file() else None


# ------------------------------------------------------------------------------------- training


class ModelFigures(Block):
    """One model's test figures (classification_metrics + size/compute + how it trained)."""

    model: str | None = text_fig("which model")
    arch: str | None = text_fig("architecture")
    accuracy: float = model_fig("test accuracy", ...)
    accuracy_lo: float | None = model_fig("test accuracy, lower end of its 95% interval")
    accuracy_hi: float | None = model_fig("test accuracy, upper end of its 95% interval")
    macro_f1: float | None = model_fig("test macro F1")
    params: int | None = model_fig("parameters")
    macs: int | None = model_fig("multiply-accumulates per window")
    per_class: Doc | None = model_fig("per-class figures")
    val_accuracy: float | None = model_fig("best validation accuracy")
    best_epoch: int | None = model_fig("epoch of the best checkpoint")
    epochs_run: int | None = model_fig("epochs trained")
    train_seconds: float | None = timing_fig("wall time of training")
    epoch_seconds: float | None = timing_fig("wall time per epoch")
    samples_per_s: float | None = timing_fig("training throughput")
    device: str | None = text_fig("torch device")


class Sanity(Block):
    EXTRA = Kind.MODEL
    judged: bool | None = model_fig("whether the schedule reached the check epoch")
    passed: bool | None = model_fig("the sanity verdict (None: not judged)")


class TeacherMetrics(Record, ModelFigures):
    """metrics/teacher.json (train_teacher)."""

    PATH = "metrics/teacher.json"
    WHAT = "teacher metrics record"
    sanity: Sanity | None = None


class StudentsTrained(Block):
    device: str | None = text_fig("torch device")
    side_by_side: bool | None = text_fig("baseline and KD trained side by side")
    threads_each: int | None = text_fig(
        "threads per student (another count trains other last bits)"
    )


class DistillMetrics(Record):
    """metrics/distill.json (distill): the teacher and both students on the test windows, the paired
    KD gain with its interval, and which student ships."""

    PATH = "metrics/distill.json"
    WHAT = "distill metrics record"
    method: str | None = text_fig("distillation method")
    teacher: ModelFigures
    students_trained: StudentsTrained | None = None
    baseline: ModelFigures | None = None
    kd: ModelFigures
    kd_gain: float | None = model_fig("kd - baseline test accuracy (paired)")
    kd_gain_lo: float | None = model_fig("its 95% interval, lower end")
    kd_gain_hi: float | None = model_fig("its 95% interval, upper end")
    kd_gain_val: float | None = model_fig(
        "kd - baseline validation accuracy (paired): chooses the student"
    )
    kd_gain_val_lo: float | None = model_fig("its 95% interval, lower end")
    kd_gain_val_hi: float | None = model_fig("its 95% interval, upper end")
    kd_verdict: str | None = text_fig("the KD verdict in words")
    kd_epoch_cost_ratio: float | None = timing_fig("KD epoch time / baseline epoch time")
    shipped: Literal["kd", "baseline"] = text_fig("the student that ships", "kd")
    gap_to_teacher: float | None = model_fig("teacher - shipped student test accuracy")


# --------------------------------------------------------------------------------------- export


class ExportedModel(Block):
    path: str | None = text_fig("where the file lives")
    file_bytes: int | None = model_fig("file size")
    weight_bytes: int | None = model_fig("bytes of weights")
    weight_dtypes: Doc | None = model_fig("weights per dtype")
    sha256: str | None = text_fig("the file's SHA-256")
    accuracy: float = model_fig("test accuracy (onnxruntime)", ...)
    accuracy_lo: float | None = model_fig("its 95% interval, lower end")
    accuracy_hi: float | None = model_fig("its 95% interval, upper end")
    agreement_with_fp32: float | None = model_fig("share of test windows where INT8 and FP32 agree")
    quantization: Doc | None = text_fig("how the INT8 file was quantised")


class TorchFigures(Block):
    EXTRA = Kind.MODEL
    student_accuracy: float | None = model_fig("PyTorch student test accuracy")


class ExportMetrics(Record):
    """metrics/export.json (export): parity with PyTorch, FP32 and INT8 accuracy and the paired drop."""

    PATH = "metrics/export.json"
    WHAT = "export metrics record"
    parity: Doc | None = model_fig("student ONNX vs PyTorch")
    teacher_parity: Doc | None = model_fig("teacher ONNX vs PyTorch")
    fp32: ExportedModel
    int8: ExportedModel
    int8_drop: float = model_fig("fp32 - int8 test accuracy (paired)", ...)
    int8_drop_lo: float | None = model_fig("its 95% interval, lower end")
    int8_drop_hi: float | None = model_fig("its 95% interval, upper end")
    teacher: ExportedModel | None = None
    pytorch: TorchFigures | None = None
    test_windows: int | None = model_fig("test windows scored")
    opset: int | None = model_fig("ONNX opset")
    input_scale_folded: Doc | None = model_fig(
        "per model: the input normalisation folded into the graph"
    )
    lineage: Doc | None = text_fig("checkpoints and params the files were exported from")


# ------------------------------------------------------------------------------------ benchmark


class ReleaseFigures(Block):
    """benchmark.json's flat `release` block: batch-1 figures on the release profile."""

    EXTRA = Kind.TIMING
    profile: str = text_fig("the release profile (the first benchmark profile)", ...)
    batch: int | None = model_fig("batch size")
    format: str | None = timing_fig("the format the release profile ships (auto: chosen by timing)")
    shipped_model: str | None = timing_fig("the model it ships")
    shipped_file: str | None = timing_fig("the file it ships")
    shipped_p50_ms: float | None = timing_fig()
    shipped_p95_ms: float | None = timing_fig()
    shipped_net_p50_ms: float | None = timing_fig()
    shipped_x_floor: float | None = timing_fig()
    shipped_net_x_floor: float | None = timing_fig()
    shipped_file_bytes: int | None = timing_fig("follows the shipped file, chosen by timing")
    floor_p50_ms: float | None = timing_fig("the runtime's call floor")
    floor_p95_ms: float | None = timing_fig()
    student_int8_p50_ms: float = timing_fig("", ...)
    student_int8_p95_ms: float = timing_fig("", ...)
    student_int8_net_p50_ms: float | None = timing_fig()
    student_int8_net_p95_ms: float | None = timing_fig()
    student_fp32_p50_ms: float = timing_fig("", ...)
    student_fp32_p95_ms: float = timing_fig("", ...)
    student_fp32_net_p50_ms: float | None = timing_fig()
    teacher_fp32_p50_ms: float = timing_fig("", ...)
    teacher_fp32_net_p50_ms: float | None = timing_fig()
    student_int8_x_floor: float | None = timing_fig()
    student_fp32_x_floor: float | None = timing_fig()
    net_speedup_fp32_vs_teacher: float | None = timing_fig()
    net_speedup_shipped_vs_teacher: float | None = timing_fig()
    speedup_vs_teacher: float = timing_fig("teacher p50 / FP32 student p50", ...)
    speedup_int8_vs_teacher: float | None = timing_fig()
    net_speedup_int8_vs_teacher: float | None = timing_fig()
    prod_file: str | None = text_fig("the file prod ships on this profile")
    prod_p50_ms: float | None = timing_fig()
    prod_net_p50_ms: float | None = timing_fig()
    latency_ratio_vs_prod: float | None = timing_fig(
        "the gate's figure: shipped / prod, net of the floor"
    )
    runs: int | None = model_fig("timed runs")
    int8_file_bytes: int = model_fig("INT8 file size", ...)
    int8_weight_bytes: int = model_fig("INT8 weight bytes", ...)
    ram_estimate_bytes: int = timing_fig(
        "static RAM estimate of the shipped file (chosen by timing)"
    )
    flash_estimate_bytes: int = timing_fig(
        "static flash estimate of the shipped file (chosen by timing)"
    )
    fits: bool = timing_fig("the shipped file fits the release profile's budget", ...)
    fits_all_profiles: bool | None = timing_fig("every profile's shipped file fits its budget")


class Target(Block):
    EXTRA = Kind.TIMING
    target: str = text_fig("the target in words", ...)
    value: float | None = timing_fig()
    met: bool | None = timing_fig()


class Statics(Block):
    EXTRA = Kind.MODEL
    source: str | None = text_fig()
    assumptions: str | None = text_fig()


class ModelCost(Block):
    EXTRA = Kind.MODEL
    path: str | None = text_fig()
    static: Statics | None = None


class FormatChoice(Block):
    """The student file a profile ships and why."""

    EXTRA = Kind.TIMING
    requested: str | None = text_fig("benchmark.profiles[].format")
    chosen: Literal["fp32", "int8"] = timing_fig(
        "the format it ships (auto: chosen by timing)", ...
    )
    accuracy_split: str | None = text_fig("the split the accuracies are on")
    accuracy: Doc | None = model_fig("per format: accuracy on that split")
    tolerance: float | None = model_fig("benchmark.format_tolerance")


class ProfileFigures(Block):
    EXTRA = Kind.TIMING
    kind: str | None = text_fig("measured here or a static estimate only")
    rss_method: str | None = text_fig()
    threads: int | None = model_fig()
    budget: Doc | None = model_fig("the profile's budgets")
    fits: Doc | None = model_fig("per model: fits the budget (static estimates)")
    warmup: int | None = model_fig()
    runs: int | None = model_fig()
    max_seconds: float | None = model_fig()
    format: FormatChoice | None = None


class Interleaved(Block):
    EXTRA = Kind.TIMING
    method: str | None = text_fig()


class PerOp(Block):
    EXTRA = Kind.TIMING  # the profiler's timings, shares and op order measure the machine
    path: str | None = text_fig()
    method: str | None = text_fig()
    runs: int | None = model_fig()
    threads: int | None = model_fig()
    nodes: int | None = model_fig()


class BenchmarkMetrics(Record):
    """metrics/benchmark.json (benchmark): per device profile, what the students and the teacher cost."""

    PATH = "metrics/benchmark.json"
    WHAT = "benchmark record"
    release: ReleaseFigures
    targets: dict[str, Target] = Field(default_factory=dict)
    models: dict[str, ModelCost] = Field(default_factory=dict)
    profiles: dict[str, ProfileFigures] = Field(default_factory=dict)
    interleaved: Interleaved | None = None
    per_op: dict[str, PerOp] = Field(default_factory=dict)
    host: Doc | None = timing_fig("the machine the figures were measured on")
    notes: str | None = text_fig()

    def formats(self) -> dict[str, str]:
        """{profile: the format it ships} ({} for a file from before per-profile formats)."""
        return {n: p.format.chosen for n, p in self.profiles.items() if p.format is not None}


# ------------------------------------------------------------------------------------------ mcu


class McuProfile(Block):
    EXTRA = Kind.MODEL  # build figures (sizes, stack, arena): exact for the same inputs
    mcu: str | None = text_fig("the Cortex-M core")
    clock_hz: int | None = model_fig()
    ram_budget_bytes: int | None = model_fig()
    flash_budget_bytes: int | None = model_fig()
    latency_budget_ms: float | None = model_fig()
    status: str | None = text_fig()
    ram_bytes: int | None = model_fig("measured RAM: data+bss+stack+I/O")
    flash_bytes: int | None = model_fig("measured flash: model text+data")
    est_ms_at_clock: float | None = timing_fig("QEMU instructions / inference at clock_hz")
    object: str | None = text_fig()
    opt: str | None = text_fig()
    qemu: Doc | None = model_fig("the QEMU run: instruction counts, identical to the host build")


class McuReport(Record):
    """models/mcu/mcu.json (mcu): the generated C, host parity, Cortex-M builds and the QEMU run."""

    PATH = "models/mcu/mcu.json"
    WHAT = "MCU report"
    model: str | None = text_fig()
    quantization: Doc | None = text_fig()
    qoperator_model: str | None = text_fig()
    c_source: str | None = text_fig()
    c_header: str | None = text_fig()
    entry: Any = text_fig()
    input_count: int | None = model_fig()
    output_count: int | None = model_fig()
    engine: Doc | None = text_fig("which C ships and why")
    macs: int | None = model_fig()
    host_parity: Doc | str | None = model_fig("the C model vs onnxruntime INT8, or 'not verified'")
    toolchain: Doc | None = text_fig()
    profiles: dict[str, McuProfile] = Field(default_factory=dict)
    objects: list[str] = text_fig(default=[])
    verified: bool = model_fig("built, run in QEMU and measured for every MCU profile", ...)
    status: str = text_fig("", ...)
    other_engine: Doc | None = model_fig(
        "the other engine's parity and builds (mcu.compare_engines)"
    )


# -------------------------------------------------------------------------------------- promote

Verdict: TypeAlias = Literal["pass", "fail", "off", "not verified"]
_OPS = {">=": float.__ge__, "<=": float.__le__, ">": float.__gt__}
# Gate figures are shares of windows and their differences, computed in float: 0.686 - 0.666 is
# 0.020000000000000018. Compared at this many decimals, a drop of exactly the bound meets it.
_GATE_DECIMALS = 9


class GateRow(Block):
    """One gate: the figure it reads (its estimate and interval), the figure it tests against the threshold
    (the estimate, or one end of the interval), and the verdict."""

    gate: str = text_fig("the gate's name (`latency:<profile>`: per profile)", ...)
    metric: str = text_fig("what the figure is", ...)
    value: Any = model_fig("the estimate (None: not measured)")
    lo: float | None = model_fig("lower end of the estimate's 95% interval")
    hi: float | None = model_fig("upper end of the estimate's 95% interval")
    tested: Any = model_fig(
        "the figure compared with the threshold: the estimate or one end of its interval"
    )
    op: str = text_fig("how `tested` compares with the threshold", ...)
    threshold: Any = model_fig("the gate's threshold (None: the gate is off)")
    verdict: Verdict = text_fig("pass / fail / off / not verified", ...)
    detail: str = text_fig("why, in words", "")
    mcu: str | None = text_fig("the Cortex-M core of an MCU row")
    value_kind: Literal["model", "timing", "text"] = text_fig(
        "what `value` is: a model figure or a run-to-run timing", "model"
    )

    @classmethod
    def judge(
        cls,
        gate: str,
        metric: str,
        value: Any,
        op: str,
        threshold: Any,
        *,
        interval: tuple[float, float] | None = None,
        tested: Any = None,
        detail: str = "",
        value_kind: Kind = Kind.MODEL,
        **extra: Any,
    ) -> GateRow:
        """A row whose verdict compares `tested` (default: `value`) with `threshold` ('off' without one)."""
        tested = value if tested is None else tested
        verdict: Verdict = (
            "off"
            if threshold is None
            else "pass"
            if _OPS[op](
                round(float(tested), _GATE_DECIMALS), round(float(threshold), _GATE_DECIMALS)
            )
            else "fail"
        )
        return cls.row(
            gate,
            metric,
            value,
            op,
            threshold,
            verdict,
            interval=interval,
            tested=tested,
            detail=detail,
            value_kind=value_kind,
            **extra,
        )

    @classmethod
    def row(
        cls,
        gate: str,
        metric: str,
        value: Any,
        op: str,
        threshold: Any,
        verdict: Verdict,
        *,
        interval: tuple[float | None, float | None] | None = None,
        tested: Any = None,
        detail: str = "",
        value_kind: Kind = Kind.MODEL,
        **extra: Any,
    ) -> GateRow:
        """A row with a verdict decided by the caller (off, not verified, or a check of its own)."""
        lo, hi = interval if interval is not None else (None, None)
        return cls(
            gate=gate,
            metric=metric,
            value=value,
            lo=lo,
            hi=hi,
            tested=value if tested is None else tested,
            op=op,
            threshold=threshold,
            verdict=verdict,
            detail=detail,
            value_kind=Kind(value_kind).value,  # a plain str, as it reads back from JSON
            **extra,
        )


def _gate_declaration(row: Any) -> Declaration:
    """A gate row's figures are of its value's kind (a file from before value_kind: judged by name)."""
    kind = row.get("value_kind") if isinstance(row, Mapping) else None
    figs: Declaration = Kind(kind) if kind in {k.value for k in Kind} else {}
    return {
        **{
            k: Kind.TEXT for k in ("gate", "metric", "op", "verdict", "detail", "mcu", "value_kind")
        },
        **({k: figs for k in ("value", "lo", "hi", "tested")} if isinstance(figs, Kind) else {}),
        "threshold": Kind.MODEL,
    }


class Candidate(Block):
    """The candidate's key figures, each read from the metrics file that produced it."""

    teacher_accuracy: float = model_fig("", ...)
    baseline_accuracy: float | None = model_fig()
    kd_accuracy: float = model_fig("", ...)
    kd_gain: float | None = model_fig()
    fp32_accuracy: float = model_fig("", ...)
    int8_accuracy: float = model_fig("", ...)
    int8_drop: float = model_fig("", ...)
    profile: str = text_fig("", ...)
    p50_ms: float = timing_fig("batch-1 p50 of the shipped file", ...)
    p95_ms: float = timing_fig("batch-1 p95 of the shipped file", ...)
    speedup_vs_teacher: float = timing_fig("", ...)
    size_bytes: int = timing_fig("size of the shipped file (auto: chosen by timing)", ...)
    ram_bytes: int = timing_fig("static RAM estimate of the shipped file", ...)
    flash_bytes: int = timing_fig("static flash estimate of the shipped file", ...)
    teacher_accuracy_lo: float | None = model_fig()
    teacher_accuracy_hi: float | None = model_fig()
    baseline_accuracy_lo: float | None = model_fig()
    baseline_accuracy_hi: float | None = model_fig()
    kd_accuracy_lo: float | None = model_fig()
    kd_accuracy_hi: float | None = model_fig()
    kd_gain_lo: float | None = model_fig()
    kd_gain_hi: float | None = model_fig()
    kd_gain_val: float | None = model_fig()
    kd_gain_val_lo: float | None = model_fig()
    kd_gain_val_hi: float | None = model_fig()
    shipped: str = text_fig("kd or baseline", "kd")
    fp32_accuracy_lo: float | None = model_fig()
    fp32_accuracy_hi: float | None = model_fig()
    int8_accuracy_lo: float | None = model_fig()
    int8_accuracy_hi: float | None = model_fig()
    int8_drop_lo: float | None = model_fig()
    int8_drop_hi: float | None = model_fig()
    latency_ratio_vs_prod: float | None = timing_fig()
    p50_net_ms: float | None = timing_fig()
    prod_p50_net_ms: float | None = timing_fig()
    format: str | None = timing_fig("the format the release profile ships")
    shipped_p50_ms: float | None = timing_fig()
    shipped_p95_ms: float | None = timing_fig()
    shipped_net_p50_ms: float | None = timing_fig()
    shipped_file_bytes: int | None = timing_fig()
    formats: dict[str, str] = timing_fig("{profile: format it ships}", {})
    release_format: str = timing_fig(
        "the format the release profile ships (int8 in an older file)", "int8"
    )


class Difference(Block):
    value: float = model_fig("candidate - prod accuracy on the same windows", ...)
    lo: float = model_fig("its 95% interval (recording bootstrap), lower end", ...)
    hi: float = model_fig("its 95% interval, upper end", ...)


class ProdComparison(Block):
    """The candidate's file and the file prod ships, scored on the candidate's test windows (paired)."""

    comparable: bool = model_fig("both models accept the same input contract and windows", ...)
    reason: str | None = text_fig("why not comparable")
    windows: int | None = model_fig("test windows scored")
    prod_file: str | None = text_fig()
    candidate_file: str | None = text_fig()
    candidate_accuracy: float | None = model_fig()
    prod_accuracy: float | None = model_fig()
    difference: Difference | None = None
    prod_files: list[str] | None = text_fig("every prod file compared (prod ships several)")


class ProdReference(Record):
    """reports/prod_reference.json (the release flow): the current prod version and its key figures,
    where the promote stage reads them."""

    PATH = "reports/prod_reference.json"
    WHAT = "prod reference"
    model: str | None = text_fig("the registered model name")
    version: str | None = text_fig("prod's version (None: no prod yet)")
    commit: str | None = text_fig()
    metrics: Doc = model_fig("prod's candidate figures, from its promotion record", {})
    bundle: dict[str, str] | None = text_fig("sha256 of each file of prod's fetched bundle")

    def recorded_accuracy(self, profiles: list[str], legacy: str) -> float | None:
        """The accuracy prod recorded for the file it ships on these profiles (its `formats`; a prod
        recorded before per-profile formats shipped `legacy`)."""
        m = self.metrics
        formats = m.get("formats") or {}
        fmt = next((formats[p] for p in profiles if formats.get(p)), legacy)
        return m.get(f"{fmt}_accuracy")


class ProdAtPromotion(Block):
    version: str | None = text_fig()
    int8_accuracy: float | None = model_fig()


class Promotion(Record):
    """reports/promotion.json (promote): every gate's figure, interval, threshold and verdict."""

    PATH = "reports/promotion.json"
    WHAT = "promotion record"
    model: str | None = text_fig("the registered model name")
    passed: bool = model_fig("every gate passed", ...)
    failed: list[str] = model_fig("the gates that failed", [])
    gates: list[GateRow] = Field(default_factory=list)
    candidate: Candidate
    shipped: str | None = text_fig("kd or baseline")
    kd_line: str | None = text_fig()
    warnings: list[str] = text_fig(default=[])
    vs_prod: ProdComparison | None = None  # the paired comparison with prod (INT8)
    vs_prod_fp32: ProdComparison | None = None  # the paired comparison with prod (FP32)
    formats: dict[str, str] = timing_fig("{profile: format it ships}", {})
    prod: ProdAtPromotion | None = (
        None  # the prod version at promotion and its recorded INT8 accuracy
    )

    def with_rows(self, rows: list[GateRow]) -> Promotion:
        gates = [*self.gates, *rows]
        failed = [r.gate for r in gates if r.verdict == "fail"]
        return self.model_copy(update={"gates": gates, "failed": failed, "passed": not failed})


class TargetFigures(Block):
    EXTRA = None
    flash_bytes: int | None = model_fig()
    latency_ms: float | None = timing_fig()
    ram_bytes: int | None = model_fig()
    rss_bytes: int | None = timing_fig("a process's peak RSS: varies run to run")


class ReleaseVerdict(Block):
    failed: int = model_fig("", ...)
    passed: bool = model_fig("", ...)
    shipped: str | None = text_fig()


class ReleaseMetrics(Record):
    """metrics/release.json (promote): the flat figures users compare in `dvc exp show` / `metrics diff`."""

    PATH = "metrics/release.json"
    WHAT = "release metrics record"
    VERSION_IN_FILE = False  # `dvc metrics diff` lists every key: only the figures users compare
    accuracy: float | None = model_fig("the INT8 student's test accuracy")
    accuracy_hi: float | None = model_fig()
    accuracy_lo: float | None = model_fig()
    format: str | None = timing_fig("the file the release profile ships")
    kd_gain: float | None = model_fig()
    kd_gain_hi: float | None = model_fig()
    kd_gain_lo: float | None = model_fig()
    latency_p50_ms: float | None = timing_fig()
    latency_p50_net_ms: float | None = timing_fig()
    latency_p95_ms: float | None = timing_fig()
    size_bytes: int | None = timing_fig("size of the shipped file (auto: chosen by timing)")
    target: dict[str, TargetFigures] = Field(default_factory=dict)
    mcu_parity: dict[str, float | None] | None = model_fig("the C model vs onnxruntime INT8")
    test_accuracy: dict[str, float | None] = model_fig("test accuracies", {})
    val_kd_gain: float | None = model_fig()
    val_kd_gain_hi: float | None = model_fig()
    val_kd_gain_lo: float | None = model_fig()
    verdict: ReleaseVerdict | None = None


# ------------------------------------------------------------------------ release, card, channel


class BundleFile(Block):
    sha256: str = text_fig("", ...)
    bytes: int = model_fig("", ...)
    source: str | None = text_fig("where it comes from in the project")


class CardMetrics(Block):
    teacher: TeacherMetrics | None = None
    distill: DistillMetrics | None = None
    export: ExportMetrics | None = None
    summary: Candidate | None = None


class CardGates(Block):
    passed: bool = model_fig("", ...)
    gates: list[GateRow] = Field(default_factory=list)
    prod_at_release: ProdAtPromotion | None = None


class ModelCard(Record):
    """model_card.json in a release bundle: what ships, its figures, gates and lineage."""

    WHAT = "model card"
    model: str = text_fig("", ...)
    version: str = text_fig("", ...)
    created_at: str | None = text_fig("the release commit's time")
    files: dict[str, BundleFile] = Field(default_factory=dict)
    ships: Doc | None = timing_fig("{profile: the bundle file it loads} (auto: chosen by timing)")
    release_profile: str | None = text_fig()
    input: Doc | None = model_fig("the input contract")
    normalization: Doc | None = model_fig()
    metrics: CardMetrics | None = None
    benchmark: BenchmarkMetrics | None = None
    mcu: McuReport | None = None
    gates: CardGates | None = None
    verdicts: Doc | None = text_fig()
    lineage: Doc | None = text_fig("commit, data, dvc.lock hash, environment, params")


class ChannelFile(Block):
    url: str = text_fig("", ...)
    sha256: str = text_fig("", ...)
    bytes: int = model_fig("", ...)


class ChannelDocument(Record):
    """<model>/channels/<stage>.json in the artifact store: the version a stage points at."""

    WHAT = "channel document"
    model: str = text_fig("", ...)
    stage: str = text_fig("", ...)
    version: str = text_fig("", ...)
    commit: str = text_fig("", ...)
    assignment: int = model_fig("GTO's assignment counter", ...)
    published_at: str | None = text_fig()
    files: dict[str, ChannelFile] = Field(default_factory=dict)
    sha256sums_url: str | None = text_fig()


class ReleaseSummary(Record):
    """reports/release.json (the release flow): what the run did, one source for the terminal and
    markdown summaries."""

    PATH = "reports/release.json"
    WHAT = "release summary"
    status: str = text_fig("", ...)
    store: Doc | None = text_fig()
    data: Doc | None = text_fig()
    stages: list[Doc] = timing_fig(default=[])
    dvc_pushed: int | None = model_fig()
    metrics: Candidate | None = None
    gates: list[GateRow] = Field(default_factory=list)
    failed: list[str] = model_fig(default=[])
    kd_line: str | None = text_fig()
    warnings: list[str] = text_fig(default=[])
    registry: Doc | None = text_fig()
    git_commit: str | None = text_fig()


# --------------------------------------------------------------------- what reproduce judges by

RECORDS: tuple[type[Record], ...] = (
    ProdReference,
    TeacherMetrics,
    DistillMetrics,
    ExportMetrics,
    BenchmarkMetrics,
    McuReport,
    Promotion,
    ReleaseMetrics,
    ModelCard,
    ChannelDocument,
    ReleaseSummary,
)
BY_PATH: dict[str, type[Record]] = {r.PATH: r for r in RECORDS if r.PATH}


def _kind_of(info: Any) -> Kind | None:
    extra = info.json_schema_extra
    return Kind(extra["kind"]) if isinstance(extra, dict) and "kind" in extra else None


def _type_declaration(tp: Any) -> Declaration | None:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        decls = [d for a in get_args(tp) if a is not type(None) if (d := _type_declaration(a))]
        if not decls:
            return None
        if type(None) in get_args(tp):  # an absent block (null) is a leaf of its own

            def or_absent(v: Any, decl: Declaration = decls[0]) -> Declaration:
                return Kind.MODEL if v is None else decl

            return or_absent
        return decls[0]
    if origin is dict:
        sub = _type_declaration(get_args(tp)[1])
        return {ANY: sub} if sub is not None else None
    if origin is list:
        return _type_declaration(get_args(tp)[0])
    if isinstance(tp, type) and issubclass(tp, Block):
        return declaration(tp)
    return None


def declaration(cls: type[Block]) -> Declaration:
    """What each figure of a `cls` document is (edgedistill.figures), from its fields' declared kinds."""
    if cls is GateRow:
        return _gate_declaration
    out: dict[str, Declaration] = {}
    hints = typing.get_type_hints(cls)
    for name, info in cls.model_fields.items():
        decl = _kind_of(info) or _type_declaration(hints[name])
        if decl is not None:
            out[info.alias or name] = decl
    if cls.EXTRA is not None:
        out[ANY] = cls.EXTRA
    return out


def declared_figures(path: str) -> Declaration | None:
    """The declaration for the record the pipeline keeps at `path` (None: no record lives there)."""
    cls = BY_PATH.get(path)
    return declaration(cls) if cls else None


def undeclared_fields(cls: type[Block], seen: set[type] | None = None) -> list[str]:
    """Fields of `cls` (and the blocks below it) that neither declare a kind nor hold a typed block."""
    seen = seen if seen is not None else set()
    if cls in seen:
        return []
    seen.add(cls)
    hints = typing.get_type_hints(cls)
    out = []
    for name, info in cls.model_fields.items():
        if _kind_of(info) is not None:
            continue
        blocks = _blocks_in(hints[name])
        if not blocks:
            out.append(f"{cls.__name__}.{name}")
        for b in blocks:
            out += undeclared_fields(b, seen)
    return out


def _blocks_in(tp: Any) -> list[type[Block]]:
    if isinstance(tp, type) and issubclass(tp, Block):
        return [tp]
    return [b for a in get_args(tp) for b in _blocks_in(a)]


def json_schemas() -> dict[str, dict[str, JsonValue]]:
    """Each record's JSON Schema, by file name under docs/schemas/."""
    return {
        f"{cls.__name__}.schema.json": cls.model_json_schema(by_alias=True, mode="serialization")
        for cls in RECORDS
    }
