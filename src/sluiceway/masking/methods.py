"""The names of the masking methods."""

from __future__ import annotations

from typing import Literal

MaskMethod = Literal["hash", "hmac", "truncate_ip", "email", "redact", "encrypt"]
MASK_METHODS: tuple[str, ...] = ("hash", "hmac", "truncate_ip", "email", "redact", "encrypt")


def ensure_method(method: str) -> str:
    """Return `method` if it is a masking method; raise ValueError naming it and the valid ones."""
    if method not in MASK_METHODS:
        raise ValueError(
            f"unknown masking method {method!r}; valid methods: {', '.join(MASK_METHODS)}"
        )
    return method
