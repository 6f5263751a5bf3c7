"""Masking secrets: where they come from and which methods need them."""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields

from sluiceway.errors import ConfigError
from sluiceway.masking.methods import ensure_method

SALT_ENV = "SLUICE_MASK_SALT"
HMAC_KEY_ENV = "SLUICE_HMAC_KEY"
ENCRYPTION_KEY_ENV = "SLUICE_ENCRYPTION_KEY"
ENCRYPTION_KEY_SIZE = 32

_ENV_OF_METHOD: dict[str, str] = {
    "hash": SALT_ENV,
    "email": SALT_ENV,
    "hmac": HMAC_KEY_ENV,
    "encrypt": ENCRYPTION_KEY_ENV,
}
_FIELD_OF_ENV: dict[str, str] = {
    SALT_ENV: "salt",
    HMAC_KEY_ENV: "hmac_key",
    ENCRYPTION_KEY_ENV: "encryption_key",
}
_PURPOSE_OF_ENV: dict[str, str] = {
    SALT_ENV: "salt prepended to values before SHA-256",
    HMAC_KEY_ENV: "secret key of HMAC-SHA256",
    ENCRYPTION_KEY_ENV: "AES-256-GCM key (64 hex chars or URL-safe base64 of 32 bytes)",
}
_HOW_TO_SET = "export {env}=$(python -c 'import secrets;print(secrets.token_hex(32))')"


@dataclass(frozen=True, repr=False)
class MaskKeys:
    """Secrets used by masking. The repr only says which ones are set, never their values.

    `salt` serves `hash` and `email`, `hmac_key` serves `hmac`, `encryption_key`
    (exactly 32 bytes) serves `encrypt`. A None field is a missing secret.
    """

    salt: bytes | None = None
    hmac_key: bytes | None = None
    encryption_key: bytes | None = None

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if value is not None and not isinstance(value, bytes):
                raise TypeError(f"MaskKeys.{field.name} must be bytes or None")
        if self.encryption_key is not None and len(self.encryption_key) != ENCRYPTION_KEY_SIZE:
            raise ConfigError(
                f"MaskKeys.encryption_key must be {ENCRYPTION_KEY_SIZE} bytes for AES-256-GCM, "
                f"got {len(self.encryption_key)} bytes"
            )

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{f.name}={'<set>' if getattr(self, f.name) is not None else None}"
            for f in fields(self)
        )
        return f"MaskKeys({shown})"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> MaskKeys:
        """Read the secrets from SLUICE_MASK_SALT, SLUICE_HMAC_KEY and SLUICE_ENCRYPTION_KEY.

        Salt and HMAC key are the UTF-8 bytes of the variable as written. The encryption key
        is decoded from 64 hex characters or URL-safe base64 of 32 bytes. Unset or empty
        variables give None. A malformed encryption key raises ConfigError naming the
        variable, never its value.
        """
        return cls(
            salt=_text_secret(environ.get(SALT_ENV)),
            hmac_key=_text_secret(environ.get(HMAC_KEY_ENV)),
            encryption_key=_encryption_key(environ.get(ENCRYPTION_KEY_ENV)),
        )


def _text_secret(value: str | None) -> bytes | None:
    return value.encode("utf-8") if value else None


def _encryption_key(value: str | None) -> bytes | None:
    if not value or not value.strip():
        return None
    text = value.strip()
    key = _from_hex(text) if len(text) == 2 * ENCRYPTION_KEY_SIZE else None
    key = key if key is not None else _from_urlsafe_base64(text)
    if key is None or len(key) != ENCRYPTION_KEY_SIZE:
        raise ConfigError(
            f"{ENCRYPTION_KEY_ENV} must be 64 hex characters or URL-safe base64 of "
            f"{ENCRYPTION_KEY_SIZE} bytes; set it with:\n"
            f"    {_HOW_TO_SET.format(env=ENCRYPTION_KEY_ENV)}"
        )
    return key


def _from_hex(text: str) -> bytes | None:
    try:
        return bytes.fromhex(text)
    except ValueError:
        return None


def _from_urlsafe_base64(text: str) -> bytes | None:
    padded = text + "=" * (-len(text) % 4)
    try:
        return base64.b64decode(padded, altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        return None


def required_keys(methods: Iterable[str], *, dead_letters: bool = False) -> dict[str, str]:
    """Map each environment variable the given methods need to why it is needed;
    `dead_letters`: the encryption key of dead-letter raw payloads is needed too (a
    pipeline with PII stores them encrypted).

    Methods without secrets (`truncate_ip`, `redact`) add nothing. An unknown method
    raises ValueError.
    """
    users: dict[str, list[str]] = {}
    for method in methods:
        env = _ENV_OF_METHOD.get(ensure_method(method))
        if env is not None and method not in users.setdefault(env, []):
            users[env].append(method)
    needed = {
        env: f"{_PURPOSE_OF_ENV[env]}, used by masking method(s) {', '.join(names)}"
        for env, names in users.items()
    }
    if dead_letters:
        why = "for the dead letters' raw payloads (a pipeline with PII stores them encrypted)"
        env = ENCRYPTION_KEY_ENV
        needed[env] = (
            f"{needed[env]} and {why}" if env in needed else f"{_PURPOSE_OF_ENV[env]}, {why}"
        )
    return needed


def check_keys(methods: Iterable[str], keys: MaskKeys, *, dead_letters: bool = False) -> None:
    """Raise ConfigError listing every secret the methods (and, with `dead_letters`, the
    dead letters' encryption) need that `keys` lacks.

    The message names each missing variable, what it is for and how to set it.
    Returns None when nothing is missing.
    """
    missing = {
        env: why
        for env, why in required_keys(methods, dead_letters=dead_letters).items()
        if getattr(keys, _FIELD_OF_ENV[env]) is None
    }
    if missing:
        lines = [f"  - {env}: {why}" for env, why in missing.items()]
        hints = [f"    {_HOW_TO_SET.format(env=env)}" for env in missing]
        raise ConfigError(
            "PII masking needs secrets that are not set:\n"
            + "\n".join(lines)
            + "\n  Set each one in the environment, for example:\n"
            + "\n".join(hints)
        )


def require_key(method: str, keys: MaskKeys) -> bytes:
    """Return the secret `method` uses; raise ConfigError (via check_keys) if it is missing."""
    check_keys([method], keys)
    secret: bytes = getattr(keys, _FIELD_OF_ENV[_ENV_OF_METHOD[method]])
    return secret
