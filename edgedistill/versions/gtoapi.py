"""GTO (the git-tag model registry), imported without reconfiguring this process's logging.

`gto/log.py` calls `logging.config.dictConfig` when gto is first imported, and dictConfig flushes and
closes every handler the process already has, whatever the config says. Inside a Prefect flow that
flush drains Prefect's API log and event queues: the first registry read of every release stalled for
5 s ("EventsWorker - Still processing items: 9 items remaining...") and closed the flow's handlers.
Every gto import in edgedistill goes through this module, which gives gto's logger its level and
leaves the handlers alone (gto's own stdout handler only serves its CLI)."""

from __future__ import annotations

import logging
import logging.config
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from logging.config import _DictConfigArgs  # typeshed's type of dictConfig's argument


def _gto_loggers_only(config: _DictConfigArgs) -> None:
    for name, cfg in config.get("loggers", {}).items():
        logging.getLogger(name).setLevel(cfg.get("level", logging.NOTSET))


if "gto.log" not in sys.modules:
    _dict_config = logging.config.dictConfig
    logging.config.dictConfig = _gto_loggers_only
    try:
        import gto.log  # noqa: F401
    finally:
        logging.config.dictConfig = _dict_config

from gto.api import assign, register, unassign  # noqa: E402
from gto.constants import ACTION, NAME, VERSION, Action  # noqa: E402
from gto.exceptions import (  # noqa: E402
    ArtifactNotFound,
    GTOException,
    NoRepo,
    UnknownStage,
)
from gto.registry import GitRegistry  # noqa: E402
from gto.tag import parse_name  # noqa: E402
from gto.versions import SemVer  # noqa: E402

__all__ = [
    "ACTION",
    "NAME",
    "VERSION",
    "Action",
    "ArtifactNotFound",
    "GTOException",
    "GitRegistry",
    "NoRepo",
    "SemVer",
    "UnknownStage",
    "assign",
    "parse_name",
    "register",
    "unassign",
]
