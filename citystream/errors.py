"""One exception root for the whole project.

Errors carry ``retriable`` and ``retry_after`` so callers can decide whether to back off
and try again (the same contract as aiokafka's ``KafkaError.retriable``).
"""

from __future__ import annotations


class CitystreamError(Exception):
    """Root of every error raised by citystream code."""

    retriable: bool = False

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ConfigError(CitystreamError):
    """The configuration is invalid or incomplete."""


class StackError(CitystreamError):
    """A local service could not be installed, started, stopped or set up."""


class ServiceUnavailableError(CitystreamError):
    """A dependency (broker, database) is not reachable right now."""

    retriable = True


class RejectedMessageError(CitystreamError):
    """An input message is invalid; ``reason`` is a stable, documented reason code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class RegistryError(CitystreamError):
    """A device registry operation failed (unknown device, duplicate id, bad field)."""
