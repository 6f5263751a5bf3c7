"""Object-store helpers shared by sources and sinks: where a URI lives and how to reach it.

A spec names object-store settings with short keys (``endpoint_url``, ``region``,
``access_key_id``, ``secret_access_key``, ``session_token``, ``allow_http``) or with the raw
``AWS_*`` names; whatever it leaves out comes from the environment (``AWS_ENDPOINT_URL``,
``AWS_REGION``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``).
The same settings then feed delta-rs (``delta_storage_options``) and pyarrow
(``arrow_filesystem``), so both see the same bucket.

Secrets never reach an exception message or a repr: ``redact`` scrubs them from error text.
This module also merges the source positions committed by sinks (``merge_positions``), so
every sink resumes the same way.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs as pafs
from deltalake.exceptions import DeltaError
from pydantic import AfterValidator

from sluiceway.errors import ConfigError, SinkError, StorageUnavailable

S3_SCHEMES = ("s3", "s3a")
DEFAULT_REGION = "us-east-1"

_ALIASES = {
    "endpoint_url": "AWS_ENDPOINT_URL",
    "endpoint": "AWS_ENDPOINT_URL",
    "region": "AWS_REGION",
    "access_key_id": "AWS_ACCESS_KEY_ID",
    "secret_access_key": "AWS_SECRET_ACCESS_KEY",
    "session_token": "AWS_SESSION_TOKEN",
    "allow_http": "AWS_ALLOW_HTTP",
}
_CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
_SECRET_KEYS = frozenset(_CREDENTIALS)
_SHORTEST_REDACTED = 4
_ERROR_CUT_MARKERS = ("Preview of invalid data",)
_QUOTED_VALUE = re.compile(r"'[^']*'")
_BACKTRACE = re.compile(r"\s+0: (?:<unknown>|\S+::)")
_ANSI_CODE = re.compile(r"\x1b\[[0-9;]*m")
_LONGEST_SUMMARY = 800


# Keys the object store takes besides the short names above (object_store's S3 and client
# settings, delta-rs' own), lower case and without the `aws_` prefix the S3 ones may carry.
_KNOWN_KEYS = frozenset(
    {
        *_ALIASES,
        "default_region", "bucket", "bucket_name", "token", "virtual_hosted_style_request",
        "imdsv1_fallback", "metadata_endpoint", "container_credentials_relative_uri",
        "skip_signature", "s3_express", "copy_if_not_exists", "conditional_put",
        "sse_kms_key_id", "server_side_encryption", "sse_bucket_key_enabled",
        "checksum_algorithm", "unsigned_payload", "request_payer", "profile",
        "s3_locking_provider", "s3_allow_unsafe_rename", "dynamo_table_name",
        "delta_dynamo_table_name", "force_credential_load", "allow_invalid_certificates",
        "connect_timeout", "default_content_type", "http1_only", "http2_only",
        "http2_keep_alive_interval", "http2_keep_alive_timeout", "http2_keep_alive_while_idle",
        "http2_max_frame_size", "pool_idle_timeout", "pool_max_idle_per_host", "proxy_url",
        "proxy_ca_certificate", "proxy_excludes", "timeout", "user_agent",
        "randomize_addresses", "max_retries", "retry_timeout", "backoff_config",
        "init_backoff", "max_backoff", "base",
        # Azure and Google Cloud Storage tables take their own short names too.
        "account_name", "account_key", "access_key", "sas_token", "sas_key", "client_id",
        "client_secret", "tenant_id", "authority_id", "authority_host", "use_emulator",
        "use_fabric_endpoint", "msi_endpoint", "msi_resource_id", "object_id",
        "federated_token_file", "use_azure_cli", "container_name", "bearer_token",
        "service_account", "service_account_path", "service_account_key",
        "application_credentials",
    }
)  # fmt: skip


_STORE_PREFIXES = ("aws_", "azure_", "google_", "gcs_")


def check_storage_options(options: dict[str, str]) -> dict[str, str]:
    """The spec's `storage_options`, or ValueError for a key that looks like a misspelt
    known one (`endpoint_ur` would otherwise be ignored and the default endpoint used).
    Keys with a store's prefix (`AWS_…`, `azure_…`, `google_…`) and keys close to no known
    one pass to the object store as they are: it knows settings this list does not."""
    for key in options:
        folded = key.lower()
        if folded in _KNOWN_KEYS or folded.startswith(_STORE_PREFIXES):
            continue
        close = difflib.get_close_matches(folded, sorted(_KNOWN_KEYS), n=1, cutoff=0.75)
        if close:
            raise ValueError(
                f"unknown storage option '{key}': did you mean '{close[0]}'? Known: "
                "endpoint_url, region, access_key_id, secret_access_key, session_token, "
                "allow_http, and the object store's own settings (AWS_* names pass as they are)"
            )
    return options


StorageOptions = Annotated[dict[str, str], AfterValidator(check_storage_options)]
"""The type of every spec's `storage_options`: unknown keys are spec errors."""


@dataclass(frozen=True)
class S3Settings:
    """Resolved S3 settings: spec options completed from the environment.

    Credentials are excluded from the repr.
    """

    region: str
    endpoint_url: str | None = None
    allow_http: bool = False
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    extra: dict[str, str] = field(default_factory=dict, repr=False)


def scheme(uri: str) -> str:
    """The URI's scheme in lower case ('' for a plain local path)."""
    return uri.split("://", 1)[0].lower() if "://" in uri else ""


def is_remote(uri: str) -> bool:
    """True when `uri` names an object store (s3://...), False for a local path or file://."""
    return scheme(uri) not in ("", "file")


def local_path(uri: str) -> str:
    """The filesystem path of a local URI (file:// stripped)."""
    return uri[len("file://") :] if scheme(uri) == "file" else uri


def prepare_local(uri: str) -> None:
    """Create the parent folders of a local URI; nothing for an object store."""
    if not is_remote(uri):
        Path(local_path(uri)).expanduser().parent.mkdir(parents=True, exist_ok=True)


def s3_settings(options: Mapping[str, str], environ: Mapping[str, str] | None = None) -> S3Settings:
    """Spec options (short or AWS_* keys) completed from the environment.

    Credentials come from the spec as a whole or from the environment as a whole, so a
    spec key id is never paired with an environment secret.
    """
    env = os.environ if environ is None else environ
    given = _normalise(options)
    if not any(key in given for key in _CREDENTIALS):
        given.update({key: env[key] for key in _CREDENTIALS if env.get(key)})
    endpoint = given.pop("AWS_ENDPOINT_URL", None) or env.get("AWS_ENDPOINT_URL") or None
    region = (
        given.pop("AWS_REGION", None)
        or env.get("AWS_REGION")
        or env.get("AWS_DEFAULT_REGION")
        or DEFAULT_REGION
    )
    allow_http = given.pop("AWS_ALLOW_HTTP", None)
    return S3Settings(
        region=region,
        endpoint_url=endpoint,
        allow_http=_is_true(allow_http) if allow_http is not None else _is_http(endpoint),
        access_key_id=given.pop("AWS_ACCESS_KEY_ID", None),
        secret_access_key=given.pop("AWS_SECRET_ACCESS_KEY", None),
        session_token=given.pop("AWS_SESSION_TOKEN", None),
        extra=given,
    )


def delta_storage_options(uri: str, options: Mapping[str, str]) -> dict[str, str] | None:
    """The `storage_options` delta-rs needs for `uri`; None for a local path.

    Always sets AWS_REGION (else delta-rs probes the instance-metadata endpoint) and
    ``conditional_put: etag`` (safe commits on S3 without a locking provider); both can be
    overridden by the spec. Other remote schemes get the spec options unchanged.

    Args:
        uri: the table URI.
        options: the spec's `storage_options`.
    """
    if not is_remote(uri):
        return None
    if scheme(uri) not in S3_SCHEMES:
        return dict(options)
    settings = s3_settings(options)
    resolved = {"AWS_REGION": settings.region, "conditional_put": "etag"}
    if settings.endpoint_url:
        resolved["AWS_ENDPOINT_URL"] = settings.endpoint_url
    if settings.allow_http:
        resolved["AWS_ALLOW_HTTP"] = "true"
    for key, value in zip(_CREDENTIALS, _credentials(settings), strict=True):
        if value:
            resolved[key] = value
    resolved.update(settings.extra)
    return resolved


def arrow_filesystem(uri: str, options: Mapping[str, str]) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem for `uri` and the path inside it (no scheme).

    Local paths (and file://) give a LocalFileSystem and an absolute path; s3:// gives an
    S3FileSystem (endpoint, region and credentials as in `s3_settings`) and 'bucket/key'.

    Raises:
        ConfigError: the scheme is neither local nor s3.
    """
    kind = scheme(uri)
    if kind in ("", "file"):
        return pafs.LocalFileSystem(), str(Path(local_path(uri)).expanduser().absolute())
    if kind not in S3_SCHEMES:
        raise ConfigError(
            f"Unsupported storage scheme '{kind}://' in {uri}: use a local path or s3://bucket/path."
        )
    return _s3_filesystem(s3_settings(options)), uri.split("://", 1)[1].rstrip("/")


def redact(text: str, options: Mapping[str, str]) -> str:
    """`text` with every credential (from `options` or the environment) replaced by '***'."""
    settings = s3_settings(options)
    secrets = {value for value in _credentials(settings) if value}
    secrets |= {value for key, value in _normalise(options).items() if key in _SECRET_KEYS}
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= _SHORTEST_REDACTED:
            text = text.replace(secret, "***")
    return text


_UNREACHABLE = re.compile(
    r"NETWORK_CONNECTION|Could not connect|Failed to connect|Connection refused|"
    r"error sending request|dns error|Could not resolve|timed out|curlCode: (?:6|7|28)\b|"
    r"Error performing \w+ .* after \d+ retries",
    re.IGNORECASE,
)
UNREACHABLE_ADVICE = (
    "the storage server could not be reached: check endpoint_url and the network; a "
    "`retries:` policy retries such a run"
)


def is_unreachable(exc: BaseException) -> bool:
    """True when a storage error says the server could not be reached (worth a retry),
    not that it refused the request."""
    return is_storage_error(exc) and bool(_UNREACHABLE.search(str(exc)))


def is_storage_error(exc: BaseException) -> bool:
    """True for errors raised by the storage libraries (delta-rs, pyarrow, the OS).

    delta-rs raises its DeltaError family, but also bare ``Exception`` for errors from
    DataFusion and Arrow kernels (e.g. a failed cast); programming errors such as
    TypeError or AttributeError are not storage errors and propagate unchanged.
    """
    storage_types: tuple[type[BaseException], ...] = (DeltaError, pa.ArrowException, OSError)
    return isinstance(exc, storage_types) or type(exc) in (Exception, ValueError)


@contextmanager
def storage_errors(
    what: str,
    options: Mapping[str, str],
    *,
    advice: str | Callable[[BaseException], str],
    context: Mapping[str, Any],
) -> Iterator[None]:
    """Turn a storage failure inside the block into a SinkError: "{what}: {summary}. {advice}".

    The summary names no secret and no row value (`error_summary`); errors that are not
    storage errors, and SinkErrors, pass through unchanged.
    """
    try:
        yield
    except SinkError:
        raise
    except Exception as exc:
        if not is_storage_error(exc):
            raise
        if is_unreachable(exc):
            raise StorageUnavailable(
                f"{what}: {error_summary(exc, options)}. {UNREACHABLE_ADVICE}", context=context
            ) from exc
        hint = advice(exc) if callable(advice) else advice
        raise SinkError(f"{what}: {error_summary(exc, options)}. {hint}", context=context) from exc


def error_summary(exc: BaseException, options: Mapping[str, str]) -> str:
    """A one-line description of a storage library error, without secrets or row data.

    delta-rs appends a preview of offending rows to some messages and quotes values in
    others ("Cannot cast string 'x'"); the preview is cut and single-quoted values are
    elided, because rows may hold personal data.
    """
    text = str(exc) or type(exc).__name__
    for marker in _ERROR_CUT_MARKERS:
        text = text.split(marker, 1)[0]
    text = _BACKTRACE.split(text, 1)[0]  # a Rust backtrace: frames, no meaning for a user
    text = _QUOTED_VALUE.sub("'…'", " ".join(_ANSI_CODE.sub("", text).split()))
    text = redact(text, options).rstrip(". ")
    return text if len(text) <= _LONGEST_SUMMARY else text[:_LONGEST_SUMMARY] + " …"


def merge_positions(committed: Mapping[str, Any], newer: Mapping[str, Any]) -> dict[str, Any]:
    """Fold one commit's positions into those committed before it.

    Per source: a ``files`` list is the union of both (processed files accumulate); any
    other key takes the newer value (cursors, offsets and LSNs move forward).
    """
    merged = dict(committed)
    for source, position in newer.items():
        before = merged.get(source)
        if isinstance(position, Mapping) and isinstance(before, Mapping):
            combined = {**before, **position}
            if "files" in before or "files" in position:
                combined["files"] = sorted({*before.get("files", ()), *position.get("files", ())})
            merged[source] = combined
        else:
            merged[source] = position
    return merged


def _s3_filesystem(settings: S3Settings) -> pafs.S3FileSystem:
    kwargs: dict[str, Any] = {"region": settings.region}
    if settings.access_key_id and settings.secret_access_key:
        kwargs.update(access_key=settings.access_key_id, secret_key=settings.secret_access_key)
        if settings.session_token:
            kwargs["session_token"] = settings.session_token
    if settings.endpoint_url:
        endpoint = urlparse(settings.endpoint_url)
        if endpoint.scheme:
            kwargs.update(
                endpoint_override=endpoint.netloc + endpoint.path.rstrip("/"),
                scheme=endpoint.scheme,
            )
        else:
            kwargs.update(
                endpoint_override=settings.endpoint_url,
                scheme="http" if settings.allow_http else "https",
            )
    return pafs.S3FileSystem(**kwargs)


def _normalise(options: Mapping[str, str]) -> dict[str, str]:
    normalised: dict[str, str] = {}
    for key, value in options.items():
        if key in _ALIASES:
            normalised[_ALIASES[key]] = str(value)
        elif key.lower().startswith("aws_"):
            normalised[key.upper()] = str(value)
        else:
            normalised[key] = str(value)
    return normalised


def _credentials(settings: S3Settings) -> tuple[str | None, str | None, str | None]:
    return settings.access_key_id, settings.secret_access_key, settings.session_token


def _is_http(endpoint: str | None) -> bool:
    return bool(endpoint) and str(endpoint).lower().startswith("http://")


def _is_true(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")
