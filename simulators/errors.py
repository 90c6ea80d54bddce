"""Errors of the simulator stage."""

from __future__ import annotations

from citystream.errors import CitystreamError, ServiceUnavailableError


class ScenarioError(CitystreamError):
    """A scenario file or an override is invalid."""


class ReplayError(CitystreamError):
    """A CSV series cannot be replayed."""


class ProtocolError(CitystreamError):
    """The broker sent bytes that are not valid MQTT 5."""


class ConnectError(ServiceUnavailableError):
    """The broker refused or did not answer a CONNECT; ``reason`` is the MQTT reason code."""

    def __init__(self, message: str, *, reason: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        # Bad credentials or a refused identity will not fix themselves by retrying.
        self.retriable = reason is None or reason in (0x88, 0x89, 0x9F)
