"""The one JSON codec (msgspec) used on every Kafka topic and by the Faust codec."""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

T = TypeVar("T")

_encoder = msgspec.json.Encoder()


def encode(obj: Any) -> bytes:
    """Serialise a model object (or plain data) to compact JSON bytes."""
    return _encoder.encode(obj)


_decoders: dict[Any, msgspec.json.Decoder[Any]] = {}


def _decoder(kind: Any) -> msgspec.json.Decoder[Any]:
    decoder = _decoders.get(kind)
    if decoder is None:
        decoder = _decoders[kind] = msgspec.json.Decoder(kind)
    return decoder


def decode(data: bytes | str, kind: type[T]) -> T:
    """Parse JSON into ``kind``; raises :class:`msgspec.ValidationError` or ``DecodeError``."""
    result: T = _decoder(kind).decode(data)
    return result


def to_builtins(obj: Any) -> Any:
    """Plain dicts and lists for an object (for tables and HTTP bodies)."""
    return msgspec.to_builtins(obj)


DecodeError = msgspec.DecodeError
ValidationError = msgspec.ValidationError
