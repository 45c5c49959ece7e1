"""params.yaml schema: every knob of the pipeline, validated before any work starts."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edgedistill.errors import ParamsInvalid

DEFAULT_PARAMS = "params.yaml"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataParams(_Section):
    """Where the readings are and which columns mean what (the data contract)."""

    readings: str = "data/raw/readings.parquet"
    group_col: str = "subject"
    recording_col: str | None = "recording"
    time_col: str = "t"
    label_col: str = "label"
    split_col: str = "split"
    channels: list[str] = Field(min_length=1)
    sample_rate_hz: float = Field(gt=0)
    labels: list[str] = Field(min_length=2)

    @field_validator("channels", "labels")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        dup = sorted({x for x in v if v.count(x) > 1})
        if dup:
            raise ValueError(f"duplicate entries {dup}")
        return v


class IngestParams(_Section):
    source: Literal["seglearn_watch"] = "seglearn_watch"


class DriftParams(_Section):
    enabled: bool = True
    reference: str = "data/reference/profile.json"
    max_mean_shift: float = Field(0.5, gt=0, description="|mean - ref mean| / ref std")
    max_std_ratio: float = Field(1.5, gt=1, description="std/ref std (and its inverse)")
    max_label_tv: float = Field(0.25, gt=0, le=1, description="total variation of label shares")


class ValidateParams(_Section):
    value_range: tuple[float, float] = (-1.0e3, 1.0e3)
    channel_ranges: dict[str, tuple[float, float]] = {}
    min_windows_per_class: int = Field(10, ge=1)
    max_class_imbalance: float = Field(10.0, ge=1, description="largest/smallest class windows")
    examples: int = Field(5, ge=1, le=50, description="offending values shown per failure")
    drift: DriftParams = DriftParams()

    @model_validator(mode="after")
    def _ranges_ordered(self) -> ValidateParams:
        for name, (lo, hi) in {"value_range": self.value_range, **self.channel_ranges}.items():
            if not lo < hi:
                raise ValueError(f"range for {name!r} must be [low, high] with low < high, got [{lo}, {hi}]")
        return self

    def range_for(self, channel: str) -> tuple[float, float]:
        return self.channel_ranges.get(channel, self.value_range)


class SplitParams(_Section):
    """Split by group; explicit group lists win over fractions. A `split` column wins over both."""

    val_groups: list[str] | None = None
    test_groups: list[str] | None = None
    val_fraction: float = Field(0.2, ge=0, lt=1)
    test_fraction: float = Field(0.2, gt=0, lt=1)
    seed: int = 0

    @field_validator("val_groups", "test_groups", mode="before")
    @classmethod
    def _as_str(cls, v: Any) -> Any:
        return None if v is None else [str(x) for x in v]

    @model_validator(mode="after")
    def _fractions(self) -> SplitParams:
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError("val_fraction + test_fraction must be < 1 (train would be empty)")
        return self


class PrepareParams(_Section):
    window: int = Field(128, ge=4)
    train_stride: int = Field(16, ge=1)
    eval_stride: int = Field(64, ge=1)
    split: SplitParams = SplitParams()


class Params(_Section):
    data: DataParams
    ingest: IngestParams = IngestParams()
    validate_: ValidateParams = Field(ValidateParams(), alias="validate")
    prepare: PrepareParams = PrepareParams()

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @model_validator(mode="after")
    def _cross(self) -> Params:
        unknown = sorted(set(self.validate_.channel_ranges) - set(self.data.channels))
        if unknown:
            raise ValueError(f"validate.channel_ranges names channels not in data.channels: {unknown}")
        return self

    @property
    def validate_params(self) -> ValidateParams:
        return self.validate_


def _format_error(err: dict[str, Any]) -> str:
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


def load_params(path: str | Path = DEFAULT_PARAMS) -> Params:
    path = Path(path)
    if not path.is_file():
        raise ParamsInvalid(f"{path}: params file not found", hint="Run from the project root, or pass --params.")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ParamsInvalid(f"{path}: not valid YAML: {e}") from None
    except UnicodeDecodeError:
        raise ParamsInvalid(f"{path}: not a text file") from None
    return parse_params(raw, str(path))
