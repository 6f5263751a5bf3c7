"""PII masking for sluiceway: columns declared PII are masked in DuckDB before any sink.

Every method but `encrypt` (and IPv6 truncation) is a native, columnar DuckDB expression.

- ``hash``: hex SHA-256 of salt || value.
- ``hmac``: hex HMAC-SHA256(key, value), equal to Python's ``hmac.new(key, v, 'sha256')``.
- ``truncate_ip``: IPv4 to /24 ("1.2.3.4" -> "1.2.3.0"), IPv6 to /48; invalid -> NULL.
- ``email``: 12 hex chars of salted SHA-256 of the local part, domain kept; invalid -> NULL.
- ``redact``: the constant ``'[REDACTED]'``.
- ``encrypt``: deterministic AES-256-GCM, URL-safe base64; equal values give equal tokens
  (this reveals equality); reversible with ``decrypt_token``.

Usage::

    keys = MaskKeys.from_env()
    check_keys(["hmac", "email"], keys)
    register_functions(con, keys)
    con.sql(f"SELECT {mask_sql('hmac', 'user_id', keys)} AS user_id FROM t")
"""

from __future__ import annotations

from sluiceway.masking.crypto import decrypt_token, decrypt_value, encrypt_value, encrypt_values
from sluiceway.masking.keys import MaskKeys, check_keys, required_keys
from sluiceway.masking.methods import MASK_METHODS, MaskMethod
from sluiceway.masking.sql import mask_sql, register_functions

__all__ = [
    "MASK_METHODS",
    "MaskKeys",
    "MaskMethod",
    "check_keys",
    "decrypt_token",
    "decrypt_value",
    "encrypt_value",
    "encrypt_values",
    "mask_sql",
    "register_functions",
    "required_keys",
]
