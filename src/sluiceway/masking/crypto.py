"""Deterministic AES-256-GCM encryption of values, and HMAC key padding for SQL."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable

import pyarrow as pa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sluiceway.masking.arrow import map_distinct

NONCE_SIZE = 12
KEY_SIZE = 32
_HMAC_BLOCK_SIZE = 64


def _check_key(key: bytes) -> None:
    if len(key) != KEY_SIZE:
        raise ValueError(f"the encryption key must be {KEY_SIZE} bytes, got {len(key)}")


def _encrypt(aes: AESGCM, plaintext: bytes, key: bytes) -> bytes:
    nonce = hmac.digest(key, plaintext, "sha256")[:NONCE_SIZE]
    return nonce + aes.encrypt(nonce, plaintext, None)


def encrypt_value(plaintext: bytes, key: bytes) -> bytes:
    """Encrypt with AES-256-GCM; return nonce || ciphertext || tag.

    The nonce is the first 12 bytes of HMAC-SHA256(key, plaintext), so the output is
    deterministic: equal plaintexts give equal tokens, which reveals equality (and makes
    encrypted columns joinable). `key` must be 32 bytes, else ValueError.
    """
    _check_key(key)
    return _encrypt(AESGCM(key), plaintext, key)


def encrypt_values(plaintexts: Iterable[bytes], key: bytes) -> list[bytes]:
    """encrypt_value for many values with one cipher instance (dead-letter payloads)."""
    _check_key(key)
    aes = AESGCM(key)
    return [_encrypt(aes, plaintext, key) for plaintext in plaintexts]


def decrypt_value(token: bytes, key: bytes) -> bytes:
    """Invert encrypt_value. Raises cryptography.exceptions.InvalidTag on a wrong key or
    a tampered token, ValueError on a token too short to hold a nonce and a tag."""
    _check_key(key)
    if len(token) < NONCE_SIZE + 16:
        raise ValueError("token too short to be an AES-GCM token")
    return AESGCM(key).decrypt(token[:NONCE_SIZE], token[NONCE_SIZE:], None)


def decrypt_token(token: str, key: bytes) -> str:
    """Invert the `encrypt` masking method: URL-safe base64 text back to the original text."""
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    return decrypt_value(raw, key).decode("utf-8")


def encrypt_array(values: pa.Array | pa.ChunkedArray, key: bytes) -> pa.Array:
    """Encrypt every non-null string of `values` into URL-safe base64 tokens; nulls stay null."""
    _check_key(key)
    aes = AESGCM(key)

    def encrypt_text(value: str) -> str:
        return base64.urlsafe_b64encode(_encrypt(aes, value.encode("utf-8"), key)).decode()

    return map_distinct(values, encrypt_text)


def hmac_pads(key: bytes) -> tuple[bytes, bytes]:
    """Return (key ^ ipad, key ^ opad) of HMAC-SHA256 per RFC 2104 (long keys hashed first)."""
    if len(key) > _HMAC_BLOCK_SIZE:
        key = hashlib.sha256(key).digest()
    block = key.ljust(_HMAC_BLOCK_SIZE, b"\x00")
    return bytes(b ^ 0x36 for b in block), bytes(b ^ 0x5C for b in block)


def key_fingerprint(key: bytes) -> str:
    """A short keyed digest that identifies `key` without revealing anything about it."""
    return hmac.digest(key, b"sluiceway masking udf", "sha256")[:6].hex()
