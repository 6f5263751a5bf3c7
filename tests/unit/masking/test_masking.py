from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import random
import time
from collections.abc import Iterator, Sequence

import duckdb
import pytest

from sluiceway.errors import ConfigError
from sluiceway.masking import (
    MASK_METHODS,
    MaskKeys,
    check_keys,
    decrypt_token,
    decrypt_value,
    encrypt_value,
    mask_sql,
    register_functions,
    required_keys,
)
from sluiceway.masking import ip as ip_module

SALT = b"pepper-\x00\xff"
HMAC_KEY = b"hmac-key-for-tests"
ENCRYPTION_KEY = bytes(range(32))
KEYS = MaskKeys(salt=SALT, hmac_key=HMAC_KEY, encryption_key=ENCRYPTION_KEY)
VALUES = ["alice", "", "Zoë 🦆 日本", "a'quote", "line\nbreak", None]


@pytest.fixture
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    connection = duckdb.connect()
    register_functions(connection, KEYS)
    yield connection
    connection.close()


def mask(
    con: duckdb.DuckDBPyConnection, method: str, values: Sequence[str | None]
) -> list[str | None]:
    con.execute("CREATE OR REPLACE TABLE t (i INTEGER, v VARCHAR)")
    con.executemany("INSERT INTO t VALUES (?, ?)", list(enumerate(values)))
    rows = con.sql(f"SELECT {mask_sql(method, 'v', KEYS)} FROM t ORDER BY i").fetchall()
    return [row[0] for row in rows]


def test_mask_methods_lists_the_six_methods() -> None:
    assert MASK_METHODS == ("hash", "hmac", "truncate_ip", "email", "redact", "encrypt")


def test_hash_equals_python_sha256_of_salt_and_value(con: duckdb.DuckDBPyConnection) -> None:
    expected = [
        None if v is None else hashlib.sha256(SALT + v.encode()).hexdigest() for v in VALUES
    ]
    assert mask(con, "hash", VALUES) == expected


def test_hmac_tokens_match_python_hmac(con: duckdb.DuckDBPyConnection) -> None:
    values = [*VALUES, *(f"user-{i}-é" * (i % 7) for i in range(300))]
    expected = [
        None if v is None else hmac.new(HMAC_KEY, v.encode(), "sha256").hexdigest() for v in values
    ]
    assert mask(con, "hmac", values) == expected


@pytest.mark.parametrize("key", [b"", b"k", b"x" * 64, b"y" * 65, bytes(range(200))])
def test_hmac_handles_empty_block_sized_and_long_keys(key: bytes) -> None:
    keys = MaskKeys(hmac_key=key)
    sql = f"SELECT {mask_sql('hmac', 'v', keys)} FROM (VALUES ('héllo')) t(v)"
    got = duckdb.connect().sql(sql).fetchall()
    assert got == [(hmac.new(key, "héllo".encode(), "sha256").hexdigest(),)]


def test_truncate_ip_keeps_ipv4_slash_24_and_ipv6_slash_48(
    con: duckdb.DuckDBPyConnection,
) -> None:
    values = [
        "192.168.1.77",
        "10.0.0.0",
        "255.255.255.255",
        "2001:db8:85a3:8d3:1319:8a2e:370:7348",
        "2001:0db8:0000:0000:0000:0000:0000:0001",
        "2001:db8:1::ab",
        "::1",
        "::ffff:192.168.1.77",
        None,
    ]
    assert mask(con, "truncate_ip", values) == [
        "192.168.1.0",
        "10.0.0.0",
        "255.255.255.0",
        "2001:db8:85a3::",
        "2001:db8::",
        "2001:db8:1::",
        "::",
        "::",
        None,
    ]


def test_truncate_ip_turns_anything_not_an_address_into_null(
    con: duckdb.DuckDBPyConnection,
) -> None:
    values = [
        "not an ip",
        "",
        "fe80::1%eth0",
        "256.1.1.1",
        "1.2.3",
        "01.2.3.4",
        " 1.2.3.4",
        "1.2.3.4:8080",
        "2001:db8::g",
        "[::1]",
    ]
    assert mask(con, "truncate_ip", values) == [None] * len(values)


def test_ipv6_truncation_agrees_with_ipaddress_network_prefix(
    con: duckdb.DuckDBPyConnection,
) -> None:
    rng = random.Random(7)
    addresses = [
        ipaddress.IPv6Address(rng.getrandbits(128) >> rng.choice([0, 16, 80, 112]))
        for _ in range(500)
    ]
    texts = [a.exploded if i % 2 else a.compressed.upper() for i, a in enumerate(addresses)]
    expected = [
        str(ipaddress.IPv6Network(f"{a}/48", strict=False).network_address) for a in addresses
    ]
    assert mask(con, "truncate_ip", texts) == expected


def test_ip_truncation_is_null_for_anything_but_a_plain_address(
    con: duckdb.DuckDBPyConnection,
) -> None:
    values = [
        "1.2.3.4",
        "::1",
        "x",
        None,
        "fe80::1%eth0",
        "1:2:3:4:5:6:7:8:9",
        "1.2.3.256",
        "2001:DB8::",
    ]
    assert mask(con, "truncate_ip", values) == [
        "1.2.3.0",
        "::",
        None,
        None,
        None,
        None,
        None,
        "2001:db8::",
    ]


def test_sql_ipv6_truncation_matches_the_python_reference(con: duckdb.DuckDBPyConnection) -> None:
    rng = random.Random(11)
    texts = []
    for _ in range(300):
        address = ipaddress.IPv6Address(rng.getrandbits(128) >> rng.choice([0, 32, 64, 96, 120]))
        texts.append(address.compressed if rng.random() < 0.5 else address.exploded)
    assert mask(con, "truncate_ip", texts) == [ip_module.truncate_ipv6(t) for t in texts]


def test_email_keeps_the_domain_and_hashes_the_local_part(
    con: duckdb.DuckDBPyConnection,
) -> None:
    values = ["alice@example.com", "zoë@例え.jp", '"a@b"@corp.io', None]
    local_hash = [
        hashlib.sha256(SALT + local.encode()).hexdigest()[:12]
        for local in ["alice", "zoë", '"a@b"']
    ]
    masked = mask(con, "email", values)
    assert masked == [
        f"{local_hash[0]}@example.com",
        f"{local_hash[1]}@例え.jp",
        f"{local_hash[2]}@corp.io",
        None,
    ]
    assert "alice" not in (masked[0] or "")


def test_email_without_at_or_parts_becomes_null(con: duckdb.DuckDBPyConnection) -> None:
    assert mask(con, "email", ["alice", "", "@example.com", "alice@"]) == [None] * 4


def test_redact_replaces_every_non_null_value(con: duckdb.DuckDBPyConnection) -> None:
    expected = [None if v is None else "[REDACTED]" for v in VALUES]
    assert mask(con, "redact", VALUES) == expected


def test_encrypt_round_trips_through_decrypt_token(con: duckdb.DuckDBPyConnection) -> None:
    tokens = mask(con, "encrypt", VALUES)
    assert [None if t is None else decrypt_token(t, ENCRYPTION_KEY) for t in tokens] == VALUES


def test_encrypt_is_deterministic_and_distinguishes_values(
    con: duckdb.DuckDBPyConnection,
) -> None:
    tokens = mask(con, "encrypt", ["alice", "bob", "alice"])
    assert tokens[0] == tokens[2]
    assert tokens[0] != tokens[1]
    assert tokens[0] == base64.urlsafe_b64encode(encrypt_value(b"alice", ENCRYPTION_KEY)).decode()


def test_encrypted_text_does_not_contain_the_plaintext(con: duckdb.DuckDBPyConnection) -> None:
    plaintext = "secret-customer-name"
    token = mask(con, "encrypt", [plaintext])[0] or ""
    raw = base64.urlsafe_b64decode(token)
    assert plaintext not in token
    assert plaintext.encode() not in raw
    assert len(raw) == 12 + len(plaintext) + 16


def test_encrypt_value_nonce_is_the_hmac_prefix_and_decrypts() -> None:
    token = encrypt_value("naïve".encode(), ENCRYPTION_KEY)
    assert token[:12] == hmac.digest(ENCRYPTION_KEY, "naïve".encode(), "sha256")[:12]
    assert decrypt_value(token, ENCRYPTION_KEY) == "naïve".encode()


def test_decrypt_with_another_key_fails() -> None:
    from cryptography.exceptions import InvalidTag

    token = encrypt_value(b"alice", ENCRYPTION_KEY)
    with pytest.raises(InvalidTag):
        decrypt_value(token, b"\x01" * 32)


def test_encrypt_sql_with_unregistered_key_fails_instead_of_using_another_key(
    con: duckdb.DuckDBPyConnection,
) -> None:
    other = MaskKeys(encryption_key=b"\x02" * 32)
    with pytest.raises(duckdb.CatalogException):
        con.sql(f"SELECT {mask_sql('encrypt', 'v', other)} FROM (VALUES ('a')) t(v)").fetchall()


def test_register_functions_can_be_called_twice(con: duckdb.DuckDBPyConnection) -> None:
    register_functions(con, KEYS)
    assert mask(con, "truncate_ip", ["::1"]) == ["::"]
    assert decrypt_token(mask(con, "encrypt", ["x"])[0] or "", ENCRYPTION_KEY) == "x"


def test_non_varchar_columns_are_masked_as_text() -> None:
    got = duckdb.connect().sql(f"SELECT {mask_sql('hash', '42', KEYS)}").fetchall()
    assert got == [(hashlib.sha256(SALT + b"42").hexdigest(),)]


def test_unknown_method_raises_value_error_naming_it_and_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"'scramble'.*hash, hmac, truncate_ip"):
        mask_sql("scramble", "v", KEYS)


@pytest.mark.parametrize(
    ("method", "env"),
    [
        ("hash", "SLUICE_MASK_SALT"),
        ("email", "SLUICE_MASK_SALT"),
        ("hmac", "SLUICE_HMAC_KEY"),
        ("encrypt", "SLUICE_ENCRYPTION_KEY"),
    ],
)
def test_missing_key_raises_config_error_naming_the_env_var(method: str, env: str) -> None:
    with pytest.raises(ConfigError, match=env):
        mask_sql(method, "v", MaskKeys())


def test_methods_without_secrets_need_no_keys() -> None:
    assert mask_sql("redact", "v", MaskKeys()).startswith("CASE")
    assert required_keys(["redact", "truncate_ip"]) == {}


def test_required_keys_names_each_variable_and_its_methods() -> None:
    needed = required_keys(["hash", "email", "hmac", "hash"])
    assert sorted(needed) == ["SLUICE_HMAC_KEY", "SLUICE_MASK_SALT"]
    assert "hash, email" in needed["SLUICE_MASK_SALT"]


def test_check_keys_lists_every_missing_variable_and_how_to_set_it() -> None:
    with pytest.raises(ConfigError) as caught:
        check_keys(["hmac", "encrypt", "hash"], MaskKeys(salt=b"s"))
    message = str(caught.value)
    assert "SLUICE_HMAC_KEY" in message
    assert "SLUICE_ENCRYPTION_KEY" in message
    assert "SLUICE_MASK_SALT" not in message
    assert "export SLUICE_HMAC_KEY=$(python -c 'import secrets;print(secrets.token_hex(32))')" in (
        message
    )


def test_check_keys_passes_when_every_secret_is_present() -> None:
    assert check_keys(list(MASK_METHODS), KEYS) is None


def test_mask_keys_repr_hides_the_secrets() -> None:
    text = repr(MaskKeys(salt=b"salty-secret", hmac_key=b"hmac-secret"))
    assert text == "MaskKeys(salt=<set>, hmac_key=<set>, encryption_key=None)"
    assert str(KEYS) == "MaskKeys(salt=<set>, hmac_key=<set>, encryption_key=<set>)"


def test_from_env_reads_the_three_variables_hex_key() -> None:
    keys = MaskKeys.from_env(
        {
            "SLUICE_MASK_SALT": "salt-é",
            "SLUICE_HMAC_KEY": "hk",
            "SLUICE_ENCRYPTION_KEY": ENCRYPTION_KEY.hex(),
        }
    )
    assert keys == MaskKeys(salt="salt-é".encode(), hmac_key=b"hk", encryption_key=ENCRYPTION_KEY)


def test_from_env_accepts_urlsafe_base64_key_with_or_without_padding() -> None:
    key = b"\xfb\xff" * 16
    encoded = base64.urlsafe_b64encode(key).decode()
    assert "-" in encoded or "_" in encoded
    for text in (encoded, encoded.rstrip("=")):
        assert MaskKeys.from_env({"SLUICE_ENCRYPTION_KEY": text}).encryption_key == key


def test_from_env_treats_unset_and_empty_variables_as_missing() -> None:
    assert MaskKeys.from_env({"SLUICE_MASK_SALT": ""}) == MaskKeys()


@pytest.mark.parametrize("bad", ["abc", "zz" * 32, base64.urlsafe_b64encode(b"k" * 16).decode()])
def test_bad_encryption_key_names_the_variable_but_not_its_value(bad: str) -> None:
    with pytest.raises(ConfigError) as caught:
        MaskKeys.from_env({"SLUICE_ENCRYPTION_KEY": bad})
    assert "SLUICE_ENCRYPTION_KEY" in str(caught.value)
    assert bad not in str(caught.value)
    assert caught.value.__cause__ is None


def test_encryption_key_of_wrong_length_is_rejected_without_showing_it() -> None:
    with pytest.raises(ConfigError, match="32 bytes") as caught:
        MaskKeys(encryption_key=b"short-secret")
    assert "short-secret" not in str(caught.value)


def test_million_rows_mask_natively_in_reasonable_time() -> None:
    con = duckdb.connect()
    register_functions(con, KEYS)
    con.execute(
        "CREATE TABLE people AS SELECT 'user-' || i AS user_id, "
        "(i % 223) || '.' || (i % 251) || '.' || (i % 7) || '.' || (i % 256) AS ip "
        "FROM range(1000000) r(i)"
    )
    start = time.perf_counter()
    con.execute(
        "CREATE TABLE masked AS SELECT "
        f"{mask_sql('hmac', 'user_id', KEYS)} AS user_hmac, "
        f"{mask_sql('hash', 'user_id', KEYS)} AS user_hash, "
        f"{mask_sql('truncate_ip', 'ip', KEYS)} AS ip FROM people"
    )
    elapsed = time.perf_counter() - start
    print(f"masked 1,000,000 rows (hmac, hash, truncate_ip v4) in {elapsed:.2f} s")
    stats = con.sql(
        "SELECT count(*), count(user_hmac), count(DISTINCT user_hash), "
        "count(*) FILTER (WHERE ip LIKE '%.0') FROM masked"
    ).fetchall()
    assert stats == [(1_000_000, 1_000_000, 1_000_000, 1_000_000)]
    assert elapsed < 20
