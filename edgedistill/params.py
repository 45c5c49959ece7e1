"""params.yaml schema: every knob of the pipeline, validated before any work starts."""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any, Literal, TypeAlias

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from edgedistill.errors import ParamsInvalid

DEFAULT_PARAMS = "params.yaml"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataParams(_Section):
    """Where the readings are and which columns mean what (the data contract)."""

    readings: str = Field(
        "data/raw/readings.parquet",
        description="the readings table (Parquet or CSV file, or a hive-partitioned Parquet "
        "directory), one row per reading; the bundled data is written here by the "
        "`ingest` stage: point it at your own DVC-tracked file to use your data",
    )
    group_col: str = Field(
        "subject",
        description="who/what produced a recording (subject, device); splits are by group, never "
        "by row",
    )
    recording_col: str | None = Field(
        "recording",
        description="a contiguous recording inside a group; null: one recording per group",
    )
    time_col: str = Field(
        "t", description="timestamp or sample index, strictly increasing inside a recording"
    )
    time_unit: Literal["s", "ms", "us", "ns", "samples"] = Field(
        "s",
        description="unit of a numeric time column (datetime columns carry their own); samples = index",
    )
    label_col: str = Field("label", description="the class of each reading")
    split_col: str = Field(
        "split",
        description="optional column with train/val/test per row; when present it overrides "
        "prepare.split",
    )
    channels: list[str] = Field(
        min_length=1, description="the sensor columns fed to the models, in this order"
    )
    sample_rate_hz: float = Field(
        gt=0,
        description="readings per second; validate checks each recording's median interval against "
        "it",
    )
    labels: list[str] = Field(
        min_length=2, description="every class, in the order of the model's outputs"
    )
    dask_address: str | None = Field(
        None,
        description="data plane engine: null = in process, 'local' = a "
        "Dask LocalCluster of dask_workers processes, or a "
        "scheduler address (tcp://host:8786)",
    )
    dask_workers: int = Field(2, ge=1, description="worker processes of the 'local' Dask cluster")
    dask_timeout_s: float = Field(20.0, gt=0, description="seconds to wait for the Dask scheduler")
    vector_groups: list[list[str]] = Field(
        [["acc_x", "acc_y", "acc_z"], ["gyro_x", "gyro_y", "gyro_z"]],
        description="channel triplets that are one 3-D vector of one sensor (accelerometer, gyroscope); "
        "augment.rotate turns them together; [] for data without such vectors",
    )

    @field_validator("vector_groups")
    @classmethod
    def _triplets(cls, v: list[list[str]]) -> list[list[str]]:
        bad = [g for g in v if len(g) != 3 or len(set(g)) != 3]
        if bad:
            raise ValueError(f"each vector group is 3 distinct channels (x, y, z), got {bad}")
        flat = [c for g in v for c in g]
        dup = sorted({c for c in flat if flat.count(c) > 1})
        if dup:
            raise ValueError(f"channels {dup} are in more than one vector group")
        return v

    @field_validator("channels", "labels")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        dup = sorted({x for x in v if v.count(x) > 1})
        if dup:
            raise ValueError(f"duplicate entries {dup}")
        return v


class IngestParams(_Section):
    source: Literal["seglearn_watch"] = Field(
        "seglearn_watch",
        description="the dataset the `ingest` stage writes: the one bundled in the seglearn==1.2.5 "
        "wheel",
    )


class DriftParams(_Section):
    enabled: bool = Field(
        True,
        description="compare the data with the reference profile (mean shift, std ratio, label "
        "shares)",
    )
    reference: str = Field(
        "data/reference/profile.json",
        description="the drift reference, created from the first accepted dataset (`edgedistill "
        "validate --update-reference` accepts a new one)",
    )
    max_mean_shift: float = Field(0.5, gt=0, description="|mean - ref mean| / ref std")
    max_std_ratio: float = Field(1.5, gt=1, description="std/ref std (and its inverse)")
    max_label_tv: float = Field(0.25, gt=0, le=1, description="total variation of label shares")


class ValidateParams(_Section):
    value_range: tuple[float, float] = Field(
        (-1.0e3, 1.0e3),
        description="allowed [min, max] of a channel without an entry in channel_ranges",
    )
    channel_ranges: dict[str, tuple[float, float]] = Field(
        {
            **{f"acc_{a}": (-16.0, 16.0) for a in "xyz"},
            **{f"gyro_{a}": (-35.0, 35.0) for a in "xyz"},
        },
        description="per channel [min, max]: the physical limits of the sensor (±16 g, ±2000 dps "
        "for the bundled IMU)",
    )
    min_windows_per_class: int = Field(
        20,
        ge=1,
        description="windows each class needs, counted at prepare.eval_stride over the whole table",
    )
    max_class_imbalance: float = Field(5.0, ge=1, description="largest/smallest class windows")
    examples: int = Field(5, ge=1, le=50, description="offending values shown per failure")
    interval_tolerance: float = Field(
        0.05, gt=0, lt=1, description="|median interval x rate - 1| allowed"
    )
    max_gap_intervals: float = Field(
        1.5, gt=1, description="a step longer than this many intervals is a gap"
    )
    on_gap: Literal["split", "reject"] = Field(
        "split",
        description="a gap (a step over max_gap_intervals intervals): split = prepare cuts the "
        "recording there, no window straddles it; reject = validation fails naming the "
        "recording and the row",
    )
    on_short: Literal["skip", "reject"] = Field(
        "skip",
        description="a recording shorter than prepare.window (it gives no window): skip = reported "
        "as a warning, its readings unused (validation still fails when no recording is long "
        "enough, and the windows-per-class check counts only complete windows); reject = "
        "validation fails naming the recordings",
    )
    chunk_rows: int = Field(
        65536, ge=1, description="readings per chunk of the streaming pass (bounds memory)"
    )
    drift: DriftParams = DriftParams()

    @model_validator(mode="after")
    def _ranges_ordered(self) -> ValidateParams:
        for name, (lo, hi) in {"value_range": self.value_range, **self.channel_ranges}.items():
            if not lo < hi:
                raise ValueError(
                    f"range for {name!r} must be [low, high] with low < high, got [{lo}, {hi}]"
                )
        return self

    def range_for(self, channel: str) -> tuple[float, float]:
        return self.channel_ranges.get(channel, self.value_range)


class SplitParams(_Section):
    """Split by group; explicit group lists win over fractions. A `split` column wins over both."""

    val_groups: list[str] | None = Field(
        None, description="groups for validation (explicit lists win over val_fraction)"
    )
    test_groups: list[str] | None = Field(
        None, description="groups for test (explicit lists win over test_fraction)"
    )
    val_fraction: float = Field(
        0.2, ge=0, lt=1, description="share of groups drawn for validation when val_groups is null"
    )
    test_fraction: float = Field(
        0.2, gt=0, lt=1, description="share of groups drawn for test when test_groups is null"
    )
    seed: int = Field(0, description="seed of the group draw")
    allow_group_leakage: bool = Field(
        False,
        description="with a split column: allow one group in two "
        "splits (knowingly; test is then optimistic)",
    )

    @field_validator("val_groups", "test_groups", mode="before")
    @classmethod
    def _as_str(cls, v: Any) -> Any:
        # a list of ids (numbers allowed); anything else is left for pydantic to refuse with its message
        return [str(x) for x in v] if isinstance(v, (list, tuple)) else v

    @model_validator(mode="after")
    def _fractions(self) -> SplitParams:
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError("val_fraction + test_fraction must be < 1 (train would be empty)")
        return self


class PrepareParams(_Section):
    window: int = Field(128, ge=4, description="readings per window (128: 2.56 s at 50 Hz)")
    train_stride: int = Field(
        16, ge=1, description="step between training windows (dense: overlap is fine inside train)"
    )
    eval_stride: int = Field(64, ge=1, description="step between val/test windows")
    split: SplitParams = SplitParams()
    normalization: Literal["auto", "global", "per_window", "robust"] = Field(
        "auto",
        description="input normalisation fitted on train and run inside the models: global "
        "(z-score per channel) | robust (median/IQR) | per_window (each window "
        "z-scored, plus log-std and asinh(mean/epsilon) amplitude channels) | auto "
        "(chosen on the training windows by norm_auto_max_decades and "
        "norm_auto_max_tail_ratio)",
    )
    norm_epsilon: float = Field(
        1e-6,
        gt=0,
        description="floor of a window's std, relative to the channel's "
        "training std (flat windows); a channel constant in training: in raw units",
    )
    norm_auto_max_decades: float = Field(
        2.1, gt=0, description="auto: per_window above this p10-p90 spread"
    )
    norm_auto_max_tail_ratio: float = Field(
        3.0, gt=1, description="auto: robust above this std/IQR-sigma"
    )
    chunk_rows: int = Field(
        262144, ge=1, description="readings read per batch (bounds prepare's memory)"
    )
    shard_windows: int = Field(4096, ge=1, description="windows per prepared shard file")


class ComputeParams(_Section):
    device: str = Field(
        "auto",
        pattern=r"^(auto|cpu|cuda(:\d+)?)$",
        description="auto: CUDA (bf16 autocast) when present, else CPU; or cpu / cuda / cuda:N "
        "(cuda without a GPU is an error)",
    )
    threads: int = Field(
        0,
        ge=0,
        description="CPU threads for torch; 0 = torch's default (all cores); 1 is "
        "faster on a host shared with other CPU work (benchmarks/train_throughput.py)",
    )
    channels_last: bool = Field(
        True,
        description="CPU training runs the 1D nets as 2D channels-last (same function, "
        "parameters shared; faster oneDNN kernels)",
    )
    parallel_students: bool = Field(
        True,
        description="CPU: distill trains the student alone and the KD student side "
        "by side, one process each on half of compute.threads",
    )


class AugmentParams(_Section):
    scale: float = Field(0.1, ge=0, lt=1, description="per-channel gain 1 ± scale")
    jitter: float = Field(0.05, ge=0, description="Gaussian noise std, normalised units")
    shift: float = Field(
        0.125,
        ge=0,
        lt=0.5,
        description="random circular time shift up to ± this FRACTION of "
        "prepare.window (0.125: ± 16 readings of 128)",
    )
    rotate: float = Field(
        30.0,
        ge=0,
        le=180,
        description="random 3-D rotation of every data.vector_groups "
        "triplet, one per window, angle up to ± this, degrees",
    )
    magnitude_warp: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="std of a smooth random gain curve over time, per channel (warp_knots knots)",
    )
    time_warp: float = Field(
        0.0, ge=0, lt=1, description="std of a smooth random playback speed (warp_knots knots)"
    )
    warp_knots: int = Field(
        4, ge=2, description="knots of the smooth random curves of magnitude/time warping"
    )

    @field_validator("shift", mode="before")
    @classmethod
    def _shift_is_a_fraction(cls, v: Any) -> Any:
        if isinstance(v, int | float) and not isinstance(v, bool) and v >= 1:
            raise ValueError(
                f"{v} looks like readings: shift is a fraction of prepare.window now "
                f"(16 readings of a 128-reading window: 0.125)"
            )
        return v


class TrainParams(_Section):
    epochs: int = Field(
        ge=1, description="epochs at least (train.min_steps may add more on a small train split)"
    )
    batch_size: int = Field(128, ge=1, description="windows per optimizer step")
    optimizer: Literal["adamw", "sgd"] = Field("adamw", description="adamw or sgd")
    lr: float = Field(
        gt=0, description="learning rate (the peak of a onecycle schedule)"
    )  # teacher and student differ: params.yaml states each
    weight_decay: float = Field(ge=0, description="weight decay of the optimizer")
    schedule: Literal["onecycle", "cosine", "constant"] = Field(
        "onecycle", description="learning-rate schedule: onecycle | cosine | constant"
    )
    label_smoothing: float = Field(
        ge=0, lt=1, description="cross-entropy label smoothing (0 = off)"
    )
    patience: int = Field(0, ge=0, description="early stopping on val accuracy; 0 = off")
    grad_clip: float = Field(0.0, ge=0, description="clip the gradient norm to this (0 = off)")
    seed: int = Field(0, description="seed of init, batch order and augmentation")
    min_steps: int = Field(
        ge=0,
        description="at least this many optimizer steps: a train split with few "
        "windows gets more epochs (never fewer than `epochs`)",
    )


class ModelParams(_Section):
    arch: Literal["resnet1d", "dscnn1d"] = Field(
        description="resnet1d (the teacher: a 1D ResNet) or dscnn1d (the student: a "
        "depthwise-separable 1D CNN sized for microcontrollers)"
    )
    config: dict[str, Any] = Field(
        description="architecture settings passed to the net (widths, kernel, dropout)"
    )
    train: TrainParams
    augment: AugmentParams = AugmentParams()


class MiniRocketParams(_Section):
    """teacher.kind minirocket/auto: the MiniRocket transform (Dempster et al. 2021) + a linear head on its cached
    features (edgedistill.train.rocket): the paper's ridge classifier with calibrated scores, or a head trained with
    cross-entropy."""

    features: int = Field(
        10_000,
        ge=84,
        description="MiniRocket features (84 kernels x dilations x biases; 10,000 as published)",
    )
    max_dilations: int = Field(32, ge=1, description="dilations per kernel, at most (as published)")
    head: Literal["ridge", "logistic"] = Field(
        "ridge",
        description="ridge: the paper's classifier (ridge on the clean train windows, penalty by leave-one-out), "
        "its scores scaled by the temperature that calibrates its leave-one-out scores | logistic: a head trained "
        "with cross-entropy (AdamW) on the clean + augment_copies augmented windows (epochs, lr, weight_decay)",
    )
    augment_copies: int = Field(
        2,
        ge=0,
        description="head logistic: augmented copies of the train windows (teacher.augment) whose features the "
        "head also learns from, beside the clean windows: the bank's views are augmented alike",
    )
    epochs: int = Field(30, ge=1, description="head logistic: epochs over the cached features")
    lr: float = Field(
        0.001, gt=0, description="head logistic: AdamW learning rate (cosine schedule)"
    )
    weight_decay: float = Field(0.01, ge=0, description="head logistic: AdamW weight decay")


class TeacherParams(ModelParams):
    """The teacher: `kind` picks the model (docs/training.md#which-teacher-teacherkind); arch, config and train are
    the CNN's, augment is the CNN's training augmentation and the MiniRocket head's augmented copies."""

    kind: Literal["cnn", "minirocket", "auto", "ensemble"] = Field(
        "cnn",
        description="cnn: the network of teacher.arch/config | minirocket: MiniRocket features + a linear head "
        "(teacher.minirocket) | auto: train both; keep the lowest val cross-entropy of cnn, minirocket and their "
        "ensemble (mean probabilities), ties to the higher val accuracy; never test | ensemble: train both, "
        "keep their ensemble",
    )
    minirocket: MiniRocketParams = MiniRocketParams()


class BankParams(_Section):
    views: int = Field(
        8, ge=1, description="augmented + mixup views per training window (at least)"
    )
    mixup_alpha: float = Field(
        1.0, ge=0, description="Beta(alpha, alpha) of the bank's mixup views"
    )
    seed: int = Field(0, description="seed of the bank's views")
    max_repeats: float = Field(
        6.0,
        ge=0,
        description="more views when the KD student would see each view more "
        "often than this (its samples / (views x windows)); 0: off",
    )


class DistillParams(_Section):
    method: Literal["hinton", "dkd", "fm_bank", "fm_online"] = Field(
        "fm_bank",
        description="hinton: cached teacher logits, L = a*T^2*KL + (1-a)*CE | dkd: decoupled KD on "
        "the same logits | fm_bank: function matching on a cached bank of augmented + "
        "mixup views | fm_online: function matching with the teacher run on every "
        "batch (no cache)",
    )
    temperature: float = Field(4.0, gt=0, description="Hinton KD / DKD temperature T")
    alpha: float = Field(0.7, ge=0, le=1, description="Hinton KD weight of the soft term")
    logit_augment: bool = Field(
        True,
        description="hinton/dkd: the student sees the augmented window (as the "
        "baseline does); the cached teacher logits are the clean window's",
    )
    dkd_alpha: float = Field(1.0, ge=0, description="DKD weight of the target-class term (TCKD)")
    dkd_beta: float = Field(8.0, ge=0, description="DKD weight of the non-target-class term (NCKD)")
    fm_temperature: float = Field(1.0, gt=0, description="function-matching temperature")
    fm_label_weight: float = Field(
        0.5,
        ge=0,
        le=1,
        description="fm_bank: weight of the labels' cross-entropy on "
        "each bank view (mixup-weighted), 1 - it on the KL",
    )
    fm_label_input: Literal["view", "window"] = Field(
        "view",
        description="fm_bank: what the labels' cross-entropy sees: view = the bank view, labels mixed as "
        "it is; window = the training window under the baseline's own augmentation (the "
        "baseline's loss exactly, so only the KL term differs from the baseline)",
    )
    bank: BankParams = BankParams()


# the distill.* knobs each method reads (what `sweep.knobs` may vary for it)
METHOD_KNOBS: dict[str, tuple[str, ...]] = {
    "hinton": ("temperature", "alpha"),
    "dkd": ("temperature", "dkd_alpha", "dkd_beta"),
    "fm_bank": ("fm_temperature", "fm_label_weight"),
    "fm_online": ("fm_temperature",),
}


class S3Params(_Section):
    """S3 (or any S3-compatible endpoint) holding the artifact store; credentials come only from
    the standard AWS chain (env, ~/.aws, instance role), never from params."""

    bucket: str | None = Field(
        None, description="S3 bucket of the artifact store; null = the local directory"
    )
    prefix: str = Field("edgedistill", description="key prefix inside the bucket")
    endpoint_url: str | None = Field(
        None, description="S3-compatible endpoint (MinIO, Ceph, ...); null = AWS"
    )
    region: str | None = Field(None, description="AWS region; null = the AWS chain's default")


class StoreParams(_Section):
    """Artifact store = DVC remote (`<store>/dvc`) + release bundles (`<store>/releases/...`)."""

    local: str = Field(
        "../edgedistill-store",
        min_length=1,
        description="local store directory, relative to the project root",
    )
    remote_name: str = Field(
        "store",
        pattern=r"^[A-Za-z0-9_-]+$",
        description="name of the DVC remote that points at the store",
    )
    s3: S3Params = S3Params()


class GateParams(_Section):
    """Promotion gates on the shipped (INT8) student; a null threshold turns its gate off."""

    min_accuracy: float | None = Field(
        0.6, ge=0, le=1, description="test accuracy of each student file a profile ships"
    )
    max_drop_vs_teacher: float | None = Field(
        0.15, ge=0, le=1, description="teacher accuracy - student accuracy, at most"
    )
    max_int8_drop: float | None = Field(
        0.02, ge=0, le=1, description="FP32 - INT8 test accuracy (paired), at most"
    )
    regression_tolerance: float | None = Field(
        0.01, ge=0, le=1, description="allowed accuracy loss vs prod"
    )
    max_latency_ratio_vs_prod: float | None = Field(
        1.25,
        gt=0,
        description="candidate / prod INT8 p50 net of the call floor, measured in the same run",
    )
    min_kd_gain: float | None = Field(
        0.0,
        ge=-1,
        le=1,
        description="when the KD student ships: the upper end of "
        "the paired KD - baseline test interval",
    )
    mcu_min_argmax_agreement: float | None = Field(
        0.999,
        ge=0,
        le=1,
        description="share of test windows where the shipped C model and onnxruntime (QOperator "
        "INT8) predict the same class",
    )
    mcu_max_accuracy_drop: float | None = Field(
        0.002, ge=0, le=1, description="onnxruntime (QOperator INT8) - C model test accuracy"
    )


class ReproduceParams(_Section):
    rtol: float = Field(1e-6, ge=0, description="relative tolerance for non-timing metrics")
    atol: float = Field(1e-9, ge=0, description="absolute tolerance for non-timing metrics")
    timing_rtol: float = Field(0.5, ge=0, description="latency/throughput figures vary run to run")


class PromoteParams(_Section):
    model: str = Field(
        "student",
        pattern=r"^[a-z0-9][a-z0-9_-]*[a-z0-9]$",
        description="registry name (GTO tags student@vX.Y.Z, student#prod#N)",
    )
    gates: GateParams = GateParams()
    bump: Literal["major", "minor", "patch"] = Field(
        "minor", description="semver part bumped for each new release"
    )
    auto_prod: bool = Field(
        False, description="true: a passing release goes straight to prod (else staging)"
    )
    push_git: bool = Field(
        False, description="push release commit and tags to `origin` (the team registry)"
    )
    require_mcu_verified: bool = Field(
        False,
        description="block promotion when the MCU figures are not "
        "verified (no ARM toolchain / QEMU)",
    )
    reproduce: ReproduceParams = ReproduceParams()
    fallback: Literal["baseline", "none"] = Field(
        "baseline",
        description="when KD did not help on val: ship the baseline student, or register nothing",
    )


class CalibrationParams(_Section):
    """Windows drawn (seeded) from train to calibrate INT8 activation ranges."""

    windows: int = Field(
        256, ge=1, description="seeded train windows that calibrate the static INT8 ranges"
    )
    method: Literal["auto", "minmax", "entropy", "percentile"] = Field(
        "auto",
        description="auto: minmax and percentile (each of `percentiles`) calibrated, the one with the best "
        "validation accuracy kept | minmax | entropy | percentile (each of `percentiles`, best on validation)",
    )
    percentiles: list[float] = Field(
        [99.99, 99.9],
        min_length=1,
        description="percentile calibration: the share of each tensor's values inside its INT8 range "
        "(the rest, rare spikes, clip)",
    )
    per_channel: bool = Field(True, description="one weight scale per output channel")
    seed: int = Field(0, description="seed of the calibration sample")

    @field_validator("percentiles")
    @classmethod
    def _percentiles_in_range(cls, v: list[float]) -> list[float]:
        bad = [p for p in v if not 50.0 < p < 100.0]
        if bad:
            raise ValueError(f"each percentile must be in (50, 100) (got {bad})")
        if len(set(v)) != len(v):
            raise ValueError(f"percentiles repeat a value: {v}")
        return v

    def candidates(self) -> list[str]:
        """The calibrations tried, in order of preference on a validation tie: 'minmax', 'entropy',
        'percentile:P' (edgedistill.export.onnx_tools.calibration_options reads them)."""
        pct = [f"percentile:{p:g}" for p in self.percentiles]
        return {"auto": ["minmax", *pct], "percentile": pct}.get(self.method, [self.method])


class ExportParams(_Section):
    opset: int = Field(18, ge=18, le=23, description="ONNX opset of the exported graphs")
    parity_atol: float = Field(
        1e-4, gt=0, description="max |ONNX - PyTorch| logit difference on test"
    )
    min_argmax_agreement: float = Field(
        1.0,
        ge=0,
        le=1,
        description="share of test windows where ONNX and PyTorch predict the same class, at least",
    )
    quantization: Literal["static", "dynamic"] = Field(
        "static", description="static: QDQ with calibrated activation ranges; dynamic: weights only"
    )
    activation_type: Literal["int8", "uint8"] = Field(
        "int8", description="int8 (symmetric, as on MCU runtimes) or uint8"
    )
    calibration: CalibrationParams = CalibrationParams()
    conv2d: bool = Field(
        True,
        description="FP32 graphs run 1D convolutions as 2D (kernel 1×k): onnxruntime's "
        "blocked NCHWc kernels, same values (benchmarks/latency.py)",
    )
    fold_scale_max_ratio: float = Field(
        8.0,
        ge=0,
        description="fold the input normalisation's per-channel scale "
        "into the first Conv when max/min scale <= this (0: never; INT8 then "
        "quantizes x - center on one scale)",
    )
    int8_fp32_head: bool = Field(
        True,
        description="QDQ INT8: the time mean and classifier after the last "
        "Conv stay FP32 (faster on onnxruntime)",
    )


class DeviceProfile(_Section):
    """A target. measure: true runs onnxruntime here with its threads; false (MCU-class) only
    estimates RAM/flash from the graph. latency_ms/ram_bytes/flash_bytes: the budgets the model may
    use there, gated per profile by promote (`latency:<name>`, `ram:<name>`, `flash:<name>`)."""

    name: str = Field(
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="the profile's name, used in the gates (latency:<name>, ram:<name>, "
        "flash:<name>)",
    )
    measure: bool = Field(
        True,
        description="true: onnxruntime runs here (latency, throughput, peak RSS); false: a target "
        "not run here, static RAM/flash estimate only",
    )
    threads: int = Field(1, ge=1, description="onnxruntime intra-op threads")
    batch_sizes: list[int] = Field(
        [1],
        min_length=1,
        description="batch sizes measured (the first profile needs 1: the release figures)",
    )
    warmup: int = Field(20, ge=0, description="untimed runs before measuring")
    runs: int = Field(
        200,
        ge=10,
        description="timed runs per model and batch size (fewer when max_seconds is reached, never "
        "below 10)",
    )
    max_seconds: float = Field(3.0, gt=0, description="time cap per model and batch size")
    latency_ms: float | None = Field(
        None,
        gt=0,
        description="batch-1 latency budget of the shipped file: measured p95 here "
        "(measure: true) or QEMU's instruction count at clock_hz (mcu)",
    )
    ram_bytes: int | None = Field(
        None,
        gt=0,
        description="RAM budget: peak RSS of the session (measured) or the mcu stage's RAM figure; "
        "null: no gate",
    )
    flash_bytes: int | None = Field(
        None,
        gt=0,
        description="flash budget: the shipped file's size (measured) or the model object's flash "
        "(mcu); null: no gate",
    )
    mcu: Literal["cortex-m7", "cortex-m4", "cortex-m33"] | None = Field(
        None,
        description="a Cortex-M core: the mcu stage builds the C model for it and measures flash/RAM",
    )
    clock_hz: int | None = Field(
        None, gt=0, description="core clock, for the time estimate from QEMU's count"
    )
    format: Literal["auto", "int8", "fp32"] = Field(
        "auto",
        description="the student file this profile ships: auto = the faster of FP32 and INT8 in the "
        "benchmark stage's interleaved run (measure: true; INT8 where nothing is measured), or forced",
    )

    @model_validator(mode="after")
    def _mcu_not_measured(self) -> DeviceProfile:
        if self.mcu is not None and self.measure:
            raise ValueError(
                f"profile {self.name!r}: an mcu profile cannot run onnxruntime here (set measure: false)"
            )
        if self.mcu is not None and self.format == "fp32":
            raise ValueError(
                f"profile {self.name!r}: an mcu profile ships INT8 (the mcu stage compiles INT8 C from "
                "the student), format: fp32 is not possible there (use int8 or auto)"
            )
        return self

    @field_validator("batch_sizes")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if any(b < 1 for b in v) or len(set(v)) != len(v):
            raise ValueError(f"batch sizes must be distinct and >= 1, got {v}")
        return v


def vector_groups_in(
    groups: list[list[str]], channels: list[str]
) -> tuple[list[list[str]], list[str]]:
    """The data.vector_groups that name any of `channels`, and the channels those groups name that `channels`
    lacks. A group naming none of them is ignored (the bundled IMU triplets left in params.yaml for other data:
    no rotation); a group the data has in part is a typo (the caller refuses it)."""
    have = set(channels)
    kept = [list(g) for g in groups if set(g) & have]
    return kept, sorted({c for g in kept for c in g} - have)


def _default_profiles() -> list[DeviceProfile]:
    return [
        # budgets: see params.yaml (why each figure fits its device class)
        DeviceProfile(
            name="edge-cpu-1t",
            threads=1,
            batch_sizes=[1, 32],
            warmup=20,
            runs=300,
            max_seconds=2.0,
            latency_ms=1.28,
            ram_bytes=16 * 2**20,
            flash_bytes=4 * 2**20,
            format="auto",
        ),
        DeviceProfile(
            name="nrf52-m4",
            measure=False,
            latency_ms=51.2,
            ram_bytes=24 * 2**10,
            flash_bytes=64 * 2**10,
            mcu="cortex-m4",
            clock_hz=64_000_000,
        ),
        DeviceProfile(
            name="nrf5340-m33",
            measure=False,
            latency_ms=51.2,
            ram_bytes=64 * 2**10,
            flash_bytes=128 * 2**10,
            mcu="cortex-m33",
            clock_hz=128_000_000,
        ),
        DeviceProfile(
            name="cortex-m7",
            measure=False,
            latency_ms=12.8,
            ram_bytes=128 * 2**10,
            flash_bytes=256 * 2**10,
            mcu="cortex-m7",
            clock_hz=480_000_000,
        ),
    ]


class BenchmarkParams(_Section):
    profiles: list[DeviceProfile] = Field(default_factory=_default_profiles, min_length=1)
    # batch-1 latency of candidate, prod and the runtime's call floor in interleaved rounds (first profile)
    interleaved_warmup: int = Field(
        200, ge=0, description="untimed runs per model before the rounds"
    )
    interleaved_runs: int = Field(2000, ge=10, description="timed runs per model in each round")
    interleaved_rounds: int = Field(5, ge=1, description="rounds; figures are medians over rounds")
    profile_runs: int = Field(
        200, ge=1, description="profiled runs per model for the per-op kernel times"
    )
    format_tolerance: float = Field(
        0.01,
        ge=0,
        le=1,
        description="format: auto ships the faster file unless its "
        "validation accuracy is below the other's by more than this",
    )

    @model_validator(mode="after")
    def _release_profile(self) -> BenchmarkParams:
        names = [p.name for p in self.profiles]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"duplicate profile names {dup}")
        first = self.profiles[0]
        if not first.measure or 1 not in first.batch_sizes:
            raise ValueError(
                f"the first profile ({first.name!r}) gives the release figures: it must have "
                "measure: true and batch size 1"
            )
        return self


class McuParams(_Section):
    """The `mcu` stage: QOperator INT8 → C (edgedistill's int8 kernels, or emx-onnx-cgen) → host parity
    → per-`mcu` profile Cortex-M build (exact flash/RAM) and a QEMU run of the test image."""

    engine: Literal["int8_kernels", "emx"] = Field(
        "int8_kernels",
        description="the C that ships: int8_kernels (mcu_kernels.py; a graph it cannot lower "
        "falls back to emx, the reason in mcu.json) | emx (emx-onnx-cgen)",
    )
    compare_engines: bool = Field(
        False,
        description="also build and measure the other engine (mcu.json "
        "other_engine); benchmarks/mcu_engines.py does it side by side",
    )

    qemu_windows: int = Field(64, ge=1, description="test windows run in QEMU per profile")
    opt: Literal["-Os", "-O2", "-O3", "-Ofast"] = Field(
        "-O2", description="arm-none-eabi-gcc optimisation"
    )
    tool_timeout_seconds: float = Field(600.0, gt=0, description="per compiler/QEMU call")


class SweepParams(_Section):
    """Student sweep (`edgedistill sweep`): a grid over student size and Hinton KD knobs, one
    parallel task per point; the Pareto front of INT8 accuracy / latency / size, and the best
    student that fits the budget profile."""

    width_multipliers: list[float] = Field(
        [0.5, 1.0, 1.5], min_length=1, description="scale student.config.widths"
    )
    depths: list[int] = Field([2, 3], min_length=1, description="separable blocks after the stem")
    knobs: dict[str, list[float]] = Field(
        default_factory=dict,
        description="distill.* knobs of the configured distill.method to grid over, each with the values "
        "tried (e.g. fm_label_weight: [0.3, 0.5]); {}: the configured values, sizes only",
    )
    epochs: int | None = Field(
        20,
        ge=1,
        description="student epochs per point (null: student.train.epochs); "
        "student.train.min_steps scaled alike",
    )
    budget_profile: str | None = Field(
        None,
        description="benchmark profile whose RAM/flash budget the "
        "chosen student must fit (null: the last profile)",
    )
    bench_runs: int = Field(
        200, ge=10, description="batch-1 INT8 runs per point (measured one at a time)"
    )
    latency_tolerance: float = Field(0.1, ge=0, description="relative latency gap treated as noise")
    max_workers: int = Field(2, ge=1, description="parallel points with the local (thread) runner")
    dask_address: str | None = Field(
        None, description="Dask scheduler (tcp://host:8786): run on it"
    )

    @field_validator("width_multipliers")
    @classmethod
    def _positive_values(cls, v: list[float]) -> list[float]:
        if any(x <= 0 for x in v):
            raise ValueError(f"values must be > 0, got {v}")
        return v

    @field_validator("knobs")
    @classmethod
    def _knob_values(cls, v: dict[str, list[float]]) -> dict[str, list[float]]:
        empty = sorted(k for k, vals in v.items() if not vals)
        if empty:
            raise ValueError(f"knobs {empty} list no values")
        return v

    @field_validator("depths")
    @classmethod
    def _depths(cls, v: list[int]) -> list[int]:
        if any(d < 1 for d in v):
            raise ValueError(f"depths must be >= 1, got {v}")
        return v


class StatsParams(_Section):
    """The recording-level bootstrap behind every interval (edgedistill.stats)."""

    resamples: int = Field(2000, ge=100, description="bootstrap replicates")
    seed: int = Field(0, description="seed of the bootstrap draws")
    confidence: float = Field(0.95, gt=0, lt=1, description="confidence level of every interval")


class OpsParams(_Section):
    """Unattended operation (`edgedistill serve`, prefect.yaml): schedules and the change watcher."""

    retrain_cron: str = Field("0 3 * * *", description="scheduled retraining (cron, in `timezone`)")
    timezone: str = Field("UTC", description="time zone of retrain_cron")
    watch_interval_seconds: int = Field(
        600, ge=5, description="how often new data / prod changes are checked"
    )
    channel_stages: list[str] = Field(
        ["prod"], min_length=1, description="registry stages published to the fleet"
    )
    schedule_check_seconds: int = Field(
        90,
        ge=1,
        description="`serve` checks that the server's scheduler "
        "created runs for the cron and interval deployments within this time",
    )


class SanityParams(_Section):
    """train_teacher's stop: the teacher must beat a 1-NN on FFT magnitudes and the majority class on val."""

    enabled: bool = Field(
        True,
        description="run the sanity stop in train_teacher (majority class, chance and a 1-NN on "
        "FFT magnitudes)",
    )
    fft_bins: int = Field(
        16, ge=1, description="rfft magnitudes per channel (DC included) for the 1-NN"
    )
    max_train_windows: int = Field(
        4000, ge=1, description="train windows the 1-NN searches (seeded sample)"
    )
    check_epoch: int = Field(
        3,
        ge=1,
        description="after this epoch the teacher must beat the majority class; "
        "runs shorter than this are not judged",
    )
    z: float = Field(
        2.0, ge=0, description="how far below the 1-NN (standard errors of a val accuracy) stops"
    )
    chance_z: float = Field(
        2.0,
        ge=0,
        description="at the end the best checkpoint's balanced val accuracy must beat "
        "chance (1/classes) by this many standard errors",
    )
    seed: int = Field(0, description="seed of the 1-NN's train sample")


class Params(_Section):
    data: DataParams
    ingest: IngestParams = IngestParams()
    validate_: ValidateParams = Field(ValidateParams(), alias="validate")
    prepare: PrepareParams = PrepareParams()
    compute: ComputeParams = ComputeParams()
    teacher: TeacherParams
    sanity: SanityParams = SanityParams()
    student: ModelParams
    distill: DistillParams = DistillParams()
    store: StoreParams = StoreParams()
    promote: PromoteParams = PromoteParams()
    export: ExportParams = ExportParams()
    benchmark: BenchmarkParams = BenchmarkParams()
    sweep: SweepParams = SweepParams()
    mcu: McuParams = McuParams()
    ops: OpsParams = OpsParams()
    stats: StatsParams = StatsParams()

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @model_validator(mode="after")
    def _cross(self) -> Params:
        unknown = sorted(set(self.validate_.channel_ranges) - set(self.data.channels))
        if unknown:
            raise ValueError(
                f"validate.channel_ranges names channels not in data.channels: {unknown}"
            )
        rotating = self.teacher.augment.rotate > 0 or self.student.augment.rotate > 0
        # a group naming none of the channels is as wrong as one naming some (a typo, or the bundled IMU
        # triplets left for other data): either way the rotation would not turn what the user meant
        unknown = sorted({c for g in self.data.vector_groups for c in g} - set(self.data.channels))
        if unknown and rotating:  # only the rotation reads the groups
            raise ValueError(
                f"data.vector_groups names channels not in data.channels: {unknown} (set "
                "data.vector_groups: [] for data without 3-D vector sensors, or "
                "teacher/student.augment.rotate: 0)"
            )
        own = METHOD_KNOBS[self.distill.method]
        foreign = sorted(set(self.sweep.knobs) - set(own))
        if (
            foreign
        ):  # the sweep trains the configured method: another method's knobs would do nothing
            raise ValueError(
                f"sweep.knobs {foreign} are not knobs of distill.method {self.distill.method} "
                f"(its knobs: {', '.join(own)})"
            )
        for k, vals in self.sweep.knobs.items():  # each value as the distill section would take it
            for v in vals:
                DistillParams.model_validate({**self.distill.model_dump(), k: v})
        return self

    @property
    def validate_params(self) -> ValidateParams:
        return self.validate_


# params as YAML reads them (nested sections of plain values): raw files, overrides and overlays
ParamsOverlay: TypeAlias = dict[str, JsonValue]


def _format_error(err: ErrorDetails) -> str:
    loc = ".".join(str(p) for p in err["loc"] if p != "__root__") or "(top level)"
    if err["type"] == "extra_forbidden":
        return f"{loc}: unknown key"
    if err["type"] == "missing":
        return f"{loc}: required key is missing"
    got = err.get("input")
    shown = "" if isinstance(got, dict) else f" (got {got!r})"
    return f"{loc}: {err['msg']}{shown}"


def parse_params(raw: Any, source: str = DEFAULT_PARAMS) -> Params:
    if not isinstance(raw, dict):
        raise ParamsInvalid(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as e:
        lines = "\n  ".join(_format_error(err) for err in e.errors())
        raise ParamsInvalid(f"{source} is invalid:\n  {lines}") from None


def apply_overrides(raw: ParamsOverlay, overrides: list[str]) -> ParamsOverlay:
    """Apply `section.key=value` overrides (values parsed as YAML, like `dvc exp run -S`) to a raw
    params dict in place; returns it. A string without '=' is refused, naming it."""
    for kv in overrides:
        key, sep, val = kv.partition("=")
        if not sep or not key:
            raise ParamsInvalid(f"override {kv!r}: expected section.key=value")
        node = raw
        *path, last = key.split(".")
        for k in path:
            node = node.setdefault(k, {})
        node[last] = yaml.safe_load(val)
    return raw


def load_params(path: str | Path = DEFAULT_PARAMS) -> Params:
    path = Path(path)
    if not path.is_file():
        raise ParamsInvalid(
            f"{path}: params file not found", hint="Run from the project root, or pass --params."
        )
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ParamsInvalid(f"{path}: not valid YAML: {e}") from None
    except UnicodeDecodeError:
        raise ParamsInvalid(f"{path}: not a text file") from None
    return parse_params(raw, str(path))


def _yaml_indents(text: str) -> tuple[int, int]:
    """(mapping indent, a block sequence's dash offset under its key) as the file writes them."""
    import re

    mapping, offset, parent = 2, 0, None
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    indented = [len(m.group(1)) for ln in lines if (m := re.match(r"^( +)[\w.-]+:", ln))]
    mapping = min(indented, default=2)
    for ln in lines:
        dash = re.match(r"^( *)- ", ln)
        if dash and parent is not None:
            offset = max(0, len(dash.group(1)) - parent)
            break
        parent = len(ln) - len(ln.lstrip()) if ln.rstrip().endswith(":") else None
    return mapping, offset


def deep_merge(
    base: MutableMapping[str, JsonValue], overlay: Mapping[str, JsonValue]
) -> MutableMapping[str, JsonValue]:
    """`overlay` onto `base`, in place and key by key: a mapping merges into a mapping, anything else
    replaces. Returns `base` (copy it first to keep it)."""
    for k, v in overlay.items():
        if isinstance(v, Mapping) and isinstance(base.get(k), MutableMapping):
            deep_merge(base[k], v)
        else:
            base[k] = v
    return base


def update_params_file(path: str | Path, overlay: ParamsOverlay) -> None:
    """Merge `overlay` (nested sections) into a params file in place, keeping its comments and layout
    (ruamel, as DVC edits it); the result is validated first, so an invalid file is never written."""
    import io
    import json

    from ruamel.yaml import YAML

    from edgedistill.io import atomic_path

    path = Path(path)
    ry = YAML()
    ry.preserve_quotes = True
    ry.width = 4096  # never re-wrap a line
    text = path.read_text()
    mapping, offset = _yaml_indents(text)  # keep the file's own indentation
    ry.indent(mapping=mapping, sequence=offset + 2, offset=offset)
    ry.representer.add_representer(
        type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null")
    )
    doc = ry.load(text)

    deep_merge(doc, json.loads(json.dumps(overlay)))  # in place: the file's comments and order stay
    buf = io.StringIO()
    ry.dump(doc, buf)
    parse_params(yaml.safe_load(buf.getvalue()), str(path))
    with atomic_path(path) as tmp:
        Path(tmp).write_text(buf.getvalue())
