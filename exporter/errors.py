"""The exporter's errors: all are user errors (one line, exit 1). A leaf module: imports nothing of ours
but the contract's base class, so every exporter module can raise them without import cycles."""

from __future__ import annotations

from ijepa_deploy.contract.errors import UserError


class ExportError(UserError, RuntimeError):
    """The export cannot proceed (bad options, unwritable folder, failed check)."""


class GateError(ExportError):
    """An artifact missed its accuracy gate."""


class EngineBuildError(ExportError):
    """TensorRT could not build, inspect or validate a plan."""
