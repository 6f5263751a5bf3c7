"""The audit log: who did what, when, to which tables, with how many rows affected.

One JSON object per line in ``<state dir>/audit.jsonl``, only ever appended to. Each entry
carries the SHA-256 of the entry before it (``prev``) and its own (``hash``), so an edited,
removed or reordered line breaks the chain and `verify_chain` finds where. Appends take an
exclusive lock on the file, so concurrent commands never interleave or fork the chain.

Entries never hold personal data in clear: a data subject is recorded by its fingerprint
(`subject_fingerprint`), never by its value.
"""

from __future__ import annotations

import fcntl
import getpass
import hashlib
import hmac
import json
import os
import socket
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

AUDIT_FILE = "audit.jsonl"
GENESIS = "0" * 64


@dataclass(frozen=True)
class AuditEntry:
    """One operation recorded in the audit log."""

    seq: int
    at: str
    who: str
    action: str
    pipeline: str | None
    tables: list[str]
    rows_affected: int | None
    details: dict[str, Any]
    prev: str
    hash: str = ""


@dataclass(frozen=True)
class ChainCheck:
    """The outcome of `verify_chain`: entries read and the first broken line, if any."""

    entries: int
    broken_at: int | None = None
    reason: str = ""
    problems: list[str] = field(default_factory=list)

    @property
    def is_intact(self) -> bool:
        return self.broken_at is None


def actor(environ: Mapping[str, str] | None = None) -> str:
    """Who runs the command: $SLUICE_ACTOR, else user@host."""
    env = os.environ if environ is None else environ
    if env.get("SLUICE_ACTOR"):
        return env["SLUICE_ACTOR"]
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def subject_fingerprint(column: str, value: str, key: bytes | None = None) -> str:
    """A stable, non-reversible name for a data subject (never its value in clear).

    With `key` (SLUICE_HMAC_KEY) it is an HMAC, which nobody without the key can test
    guesses against (a plain hash of a short id or a known email can be found by trying
    them); without it, a SHA-256."""
    text = f"{column}={value}".encode()
    if key:
        return "hmac:" + hmac.new(key, text, hashlib.sha256).hexdigest()[:16]
    return "sha256:" + hashlib.sha256(text).hexdigest()[:16]


class AuditLog:
    """The append-only audit log of one state folder."""

    def __init__(self, state_dir: str | Path) -> None:
        self.path = Path(state_dir) / AUDIT_FILE

    def append(
        self,
        action: str,
        *,
        pipeline: str | None = None,
        tables: Sequence[str] = (),
        rows_affected: int | None = None,
        details: Mapping[str, Any] | None = None,
        who: str | None = None,
    ) -> AuditEntry:
        """Record one operation; returns the entry as written (with its hash)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+", encoding="utf-8") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                handle.seek(0)
                last = _last_line(handle.read())
                seq, prev = (last["seq"] + 1, last["hash"]) if last else (1, GENESIS)
                entry = AuditEntry(
                    seq=seq,
                    at=datetime.now(UTC).isoformat(timespec="milliseconds"),
                    who=who or actor(),
                    action=action,
                    pipeline=pipeline,
                    tables=list(tables),
                    rows_affected=rows_affected,
                    details=dict(details or {}),
                    prev=prev,
                )
                entry = AuditEntry(**{**asdict(entry), "hash": _entry_hash(asdict(entry))})
                handle.seek(0, os.SEEK_END)
                handle.write(json.dumps(asdict(entry), default=str, sort_keys=True) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        return entry

    def entries(
        self, *, pipeline: str | None = None, action: str | None = None
    ) -> Iterator[AuditEntry]:
        """Every entry, oldest first, optionally only one pipeline's or one action's."""
        if not self.path.exists():
            return
        for line in self.path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            data = json.loads(line)
            if pipeline and data.get("pipeline") != pipeline:
                continue
            if action and data.get("action") != action:
                continue
            yield AuditEntry(**data)

    def verify_chain(self) -> ChainCheck:
        """Recompute every hash and link; the first line that does not match breaks it."""
        if not self.path.exists():
            return ChainCheck(entries=0)
        prev, count = GENESIS, 0
        for number, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            count += 1
            try:
                data = json.loads(line)
            except json.JSONDecodeError:
                return ChainCheck(count, number, f"line {number} is not JSON")
            if data.get("prev") != prev:
                return ChainCheck(count, number, f"line {number} does not follow the line before")
            if _entry_hash(data) != data.get("hash"):
                return ChainCheck(count, number, f"line {number} was changed after it was written")
            prev = data["hash"]
        return ChainCheck(entries=count)


def _entry_hash(data: Mapping[str, Any]) -> str:
    body = {key: value for key, value in data.items() if key != "hash"}
    return hashlib.sha256(json.dumps(body, default=str, sort_keys=True).encode()).hexdigest()


def _last_line(text: str) -> dict[str, Any] | None:
    lines = [line for line in text.splitlines() if line.strip()]
    return json.loads(lines[-1]) if lines else None
