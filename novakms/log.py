"""Structured logging: ``event key=value …`` lines with bound context.

Callers pass fields, never pre-formatted strings, and never key material: the fields logged
are wallets, app ids, ops, error codes and sizes.
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["BoundLogger", "configure", "get_logger"]


def _fmt(value: Any) -> str:
    text = str(value)
    return repr(text) if (" " in text or not text) else text


class BoundLogger:
    """A logger with context fields added to every line."""

    __slots__ = ("_context", "_logger")

    def __init__(self, logger: logging.Logger, context: dict[str, Any]) -> None:
        self._logger = logger
        self._context = context

    def bind(self, **fields: Any) -> BoundLogger:
        """A logger with more context."""
        return BoundLogger(self._logger, {**self._context, **fields})

    def _log(self, level: int, event: str, fields: dict[str, Any], exc_info: bool = False) -> None:
        if self._logger.isEnabledFor(level):
            parts = [event, *(f"{k}={_fmt(v)}" for k, v in {**self._context, **fields}.items())]
            self._logger.log(level, " ".join(parts), exc_info=exc_info)

    def debug(self, event: str, **fields: Any) -> None:
        self._log(logging.DEBUG, event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._log(logging.INFO, event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._log(logging.WARNING, event, fields)

    def exception(self, event: str, **fields: Any) -> None:
        self._log(logging.ERROR, event, fields, exc_info=True)


def get_logger(name: str, **context: Any) -> BoundLogger:
    """A bound logger for ``name``."""
    return BoundLogger(logging.getLogger(name), context)


def configure(level: str = "INFO") -> None:
    """Log to stderr (stdout is reserved for machine-readable CLI output)."""
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    # httpx logs every request at INFO (chain polls, Odyn calls): keep that for debugging only.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
