"""The kernel's JSON codec, registered with Faust as ``citystream`` (the only codec the jobs use).

Faust tables serialise their values with it; topics carry the kernel model's bytes and the
agents decode them themselves at the edge, so a malformed record becomes a dead-letter record
rather than a silent skip inside Faust.
"""

from __future__ import annotations

from typing import Any

import msgspec
from faust.serializers import codecs

from citystream import codec

NAME = "citystream"

_decoder = msgspec.json.Decoder()


class CitystreamCodec(codecs.Codec):
    """``citystream.codec.encode`` out, plain JSON data in (the caller converts to a model)."""

    def _dumps(self, obj: Any) -> bytes | None:  # type: ignore[override]  # None: see below
        # None stays None: a changelog record without a value is a tombstone (a deleted key).
        return None if obj is None else codec.encode(obj)

    def _loads(self, data: bytes) -> Any:
        return _decoder.decode(data)


def register() -> None:
    """Make the codec known to Faust (idempotent)."""
    if NAME not in codecs.codecs:
        codecs.register(NAME, CitystreamCodec())
