"""The few user-facing failure types; the CLI turns each into a one-line cause plus a hint."""

from __future__ import annotations


class EdgeDistillError(Exception):
    """Base class: a failure the user can act on (exit code 2 at the CLI, no traceback)."""

    hint = ""
    exit_code = 2

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        if hint is not None:
            self.hint = hint


class ParamsInvalid(EdgeDistillError):
    hint = "Fix params.yaml (see docs/configuration.md#checking-params) and run again."


class DataInvalid(EdgeDistillError):
    hint = (
        "Fix the readings file or the data/validate params; see reports/validation/ and "
        "docs/validation.md."
    )


class TrainingFailed(EdgeDistillError):
    hint = "Lower the learning rate or check the prepared data for extreme values."


class ModelMismatch(EdgeDistillError):
    hint = "Re-run the upstream stages (`dvc repro`) so data and checkpoints agree."


class ArtifactCorrupt(EdgeDistillError):
    hint = "The file is damaged or not what was expected; re-create or re-fetch it."


class GateFailed(EdgeDistillError):
    hint = (
        "The model was not promoted; see promotion.json for each gate "
        "(docs/releases.md#promotion-gates)."
    )


class StoreUnreachable(EdgeDistillError):
    hint = "Check the remote URL/endpoint and your AWS credentials, then retry."


class ExportFailed(EdgeDistillError):
    hint = "Nothing in models/ was replaced; fix the cause above (model, data or export params) and run again."


class ReleaseNotFound(EdgeDistillError):
    hint = "Run `edgedistill registry` to list versions and stages."


class VerificationFailed(EdgeDistillError):
    """A signed-metadata check refused what the store holds (signature, expiry, version, length/hash)."""

    hint = (
        "Nothing was installed or changed; the previous model stays. The store was tampered with, is "
        "stale, or is signed by other keys (docs/device-updates.md)."
    )
