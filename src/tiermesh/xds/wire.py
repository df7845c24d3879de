"""Protobuf wire-format helpers for assembling responses from pre-serialized parts.

Serializing the same resources once per stream would dominate fan-out cost. Protobuf's
encoding lets a message be the concatenation of its encoded fields in any order, so the
server keeps each resource's encoded bytes per snapshot and joins them with the few other
fields (version, type URL, nonce) once per response body; a stream that must send a body
with a nonce of its own appends that field. Decoding the result with the generated class
gives exactly the message one would have built field by field.
"""

from __future__ import annotations

__all__ = ["bytes_field", "string_field", "varint"]

_LEN = 2  # wire type of length-delimited fields


def varint(value: int) -> bytes:
    """Encode a non-negative int as a base-128 varint."""
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def bytes_field(number: int, payload: bytes) -> bytes:
    """Encode one length-delimited field (bytes, string or embedded message)."""
    return varint((number << 3) | _LEN) + varint(len(payload)) + payload


def string_field(number: int, text: str) -> bytes:
    """Encode one string field; the empty string is the default and encodes to nothing."""
    return bytes_field(number, text.encode()) if text else b""
