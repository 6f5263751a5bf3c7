"""Masking as DuckDB SQL expressions, and the few UDFs those expressions call."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import duckdb
import pyarrow as pa

from sluiceway.masking.crypto import encrypt_array, hmac_pads, key_fingerprint
from sluiceway.masking.ip import IPV4_PATTERN, IPV6_PATTERN, ipv6_48_sql
from sluiceway.masking.keys import MaskKeys, require_key
from sluiceway.masking.methods import MASK_METHODS, ensure_method

ENCRYPT_UDF_PREFIX = "sluice_encrypt_"
REDACTED = "[REDACTED]"
EMAIL_HASH_CHARS = 12
_EMAIL_PATTERN = r"(?s)^(.+)@([^@]+)$"

ArrowFunction = Callable[[pa.Array | pa.ChunkedArray], pa.Array]
Builder = Callable[[str, MaskKeys], str]


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _blob(data: bytes) -> str:
    return f"from_hex('{data.hex()}')"


def _salted_sha256(value: str, salt: bytes) -> str:
    return f"sha256({_blob(salt)} || encode({value}))"


def _hash(value: str, keys: MaskKeys) -> str:
    return _salted_sha256(value, require_key("hash", keys))


def _hmac(value: str, keys: MaskKeys) -> str:
    inner, outer = hmac_pads(require_key("hmac", keys))
    inner_digest = f"unhex(sha256({_blob(inner)} || encode({value})))"
    return f"sha256({_blob(outer)} || {inner_digest})"


def _truncate_ip(value: str, keys: MaskKeys) -> str:
    # An IPv6 address ending in dotted IPv4 ('::ffff:1.2.3.4') has those two groups replaced
    # by '0:0': the group count stays, and /48 never reaches them.
    v6 = (
        f"(CASE WHEN regexp_matches({value}, {_literal(':' + IPV4_PATTERN + '$')}) "
        f"THEN regexp_replace({value}, {_literal(IPV4_PATTERN + '$')}, '0:0') ELSE {value} END)"
    )
    return (
        f"CASE WHEN regexp_full_match({value}, {_literal(IPV4_PATTERN)}) "
        f"THEN regexp_replace({value}, '[0-9]+$', '0') "
        f"WHEN regexp_full_match({v6}, {_literal(IPV6_PATTERN)}) THEN {ipv6_48_sql(v6)} END"
    )


def _email(value: str, keys: MaskKeys) -> str:
    pattern = _literal(_EMAIL_PATTERN)
    local = f"regexp_extract({value}, {pattern}, 1)"
    domain = f"regexp_extract({value}, {pattern}, 2)"
    digest = _salted_sha256(local, require_key("email", keys))
    return (
        f"CASE WHEN regexp_full_match({value}, {pattern}) "
        f"THEN left({digest}, {EMAIL_HASH_CHARS}) || '@' || {domain} END"
    )


def _redact(value: str, keys: MaskKeys) -> str:
    return f"CASE WHEN {value} IS NOT NULL THEN {_literal(REDACTED)} END"


def _encrypt(value: str, keys: MaskKeys) -> str:
    return f"{encrypt_udf_name(require_key('encrypt', keys))}({value})"


_BUILDERS: dict[str, Builder] = {
    "hash": _hash,
    "hmac": _hmac,
    "truncate_ip": _truncate_ip,
    "email": _email,
    "redact": _redact,
    "encrypt": _encrypt,
}
assert tuple(_BUILDERS) == MASK_METHODS


def encrypt_udf_name(key: bytes) -> str:
    """Name of the encrypt UDF bound to `key`: a mismatched key fails loudly, not silently."""
    return ENCRYPT_UDF_PREFIX + key_fingerprint(key)


def mask_sql(method: str, column_sql: str, keys: MaskKeys) -> str:
    """Return a DuckDB expression masking the VARCHAR expression `column_sql` with `method`.

    The result is VARCHAR and NULL where the input is NULL (or, for `truncate_ip` and
    `email`, where the input is not an IP address / e-mail address). Secrets appear in
    the SQL text as blob literals. `truncate_ip` and `encrypt` call UDFs that
    register_functions must have put on the connection with the same keys.
    Raises ValueError for an unknown method, ConfigError if the method's secret is missing.
    """
    builder = _BUILDERS[ensure_method(method)]
    return builder(f"CAST(({column_sql}) AS VARCHAR)", keys)


def _register(con: duckdb.DuckDBPyConnection, name: str, function: ArrowFunction) -> None:
    with contextlib.suppress(duckdb.InvalidInputException):
        con.remove_function(name)
    con.create_function(  # type: ignore[call-overload]  # string enums work on duckdb 1.x and 2.x
        name,
        function,
        ["VARCHAR"],
        "VARCHAR",
        type="arrow",
        null_handling="special",
        side_effects=False,
    )


def _encryptor(key: bytes) -> ArrowFunction:
    def encrypt(values: pa.Array | pa.ChunkedArray) -> pa.Array:
        return encrypt_array(values, key)

    return encrypt


def register_functions(con: duckdb.DuckDBPyConnection, keys: MaskKeys) -> None:
    """Register on `con` the UDF masking needs: encryption, when `keys` has an encryption
    key (every other method is plain SQL). Idempotent: calling it again replaces it."""
    if keys.encryption_key is not None:
        _register(con, encrypt_udf_name(keys.encryption_key), _encryptor(keys.encryption_key))
