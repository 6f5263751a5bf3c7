"""Where a dead letter's raw payload holds a subject: JSON by its values, other text (a
malformed CSV line, a cut NDJSON line) by whole tokens, encrypted payloads once opened."""

from __future__ import annotations

import pytest

from sluiceway.masking.crypto import encrypt_value
from sluiceway.ops.forget_scan import SubjectForms

KEY = bytes(range(32))


def forms(*values: str) -> SubjectForms:
    return SubjectForms("user_id", frozenset(values), None, KEY)


@pytest.mark.parametrize(
    ("raw", "holds"),
    [
        (b"e1,u42,ann@example.com,FR,extra", True),
        (b'{"user_id": "u42", "na', True),
        (b"e1,u421,ann@example.com", False),
        (b"e1,xu42,ann@example.com", False),
        (b"note about u42.", True),
        (b"host u42.example.com", False),
    ],
)
def test_text_that_is_not_json_holds_the_subject_only_as_a_whole_token(
    raw: bytes, holds: bool
) -> None:
    assert forms("u42").in_raw_payload(raw) is holds
    assert forms("u42").in_raw_payload(encrypt_value(raw, KEY)) is holds


def test_an_email_is_a_token_of_its_own() -> None:
    subject = forms("ann@example.com")

    assert subject.in_raw_payload(b"1,ann@example.com,FR") is True
    assert subject.in_raw_payload(b"1,joann@example.com,FR") is False
    assert subject.in_raw_payload(b"1,ann@example.com.au,FR") is False


def test_an_encrypted_payload_no_key_opens_is_unknown() -> None:
    token = encrypt_value(b"e1,u42,ann@example.com", bytes(32))

    assert forms("u42").in_raw_payload(token) is None


@pytest.mark.parametrize(
    ("raw", "holds"),
    [(b"2024/7/1,c9,FR", False), (b"at 12:7 c9", False), (b'{"customer_id": 7, "qt', True)],
)
def test_a_number_is_a_field_not_a_piece_of_a_date_or_time(raw: bytes, holds: bool) -> None:
    assert forms("7").in_raw_payload(raw) is holds
