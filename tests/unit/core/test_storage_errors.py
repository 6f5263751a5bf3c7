"""Storage failures: a server that cannot be reached is worth a retry; a refusal is not."""

from __future__ import annotations

import pytest

from sluiceway.core.storage import storage_errors
from sluiceway.errors import SinkError, StorageUnavailable, TransientError

# Messages as pyarrow's S3 filesystem and delta-rs give them for a closed port.
UNREACHABLE = [
    "When getting information for key 'x' in bucket 'b': AWS Error NETWORK_CONNECTION during "
    "HeadObject operation: curlCode: 7, Could not connect to server; Details: Failed to connect "
    "to 127.0.0.1:5999 after 0 ms: Could not connect to server",
    "Kernel error -> Generic S3 error\n  Error performing GET http://127.0.0.1:5999/b/t/"
    "_delta_log/_last_checkpoint in 4.0s, after 10 retries, max_retries 10, retry_timeout 180s"
    "  - HTTP error",
]
REFUSED = [
    "When listing objects under key 'x' in bucket 'b': AWS Error ACCESS_DENIED during "
    "ListObjectsV2 operation: Access Denied",
    "Generic S3 error: Client error with status 403 Forbidden: SignatureDoesNotMatch",
]


def raise_in_block(message: str) -> None:
    with storage_errors("write the table", {}, advice="check it", context={}):
        raise OSError(message)


@pytest.mark.parametrize("message", UNREACHABLE)
def test_a_server_that_cannot_be_reached_is_a_transient_error(message: str) -> None:
    with pytest.raises(StorageUnavailable) as caught:
        raise_in_block(message)

    assert isinstance(caught.value, TransientError)
    assert caught.value.message.startswith("write the table: ")
    assert "could not be reached" in caught.value.message


@pytest.mark.parametrize("message", REFUSED)
def test_a_server_that_refuses_is_a_sink_error_with_the_advice(message: str) -> None:
    with pytest.raises(SinkError) as caught:
        raise_in_block(message)

    assert caught.value.message.endswith("check it")


def test_a_rust_backtrace_is_left_out_of_the_message() -> None:
    with pytest.raises(SinkError) as raised:
        raise_in_block(
            "External error: Schema error: Invalid data type for Delta Lake: Interval(MonthDayNano)"
            "\n   0: <unknown>\n   1: <unknown>\n  10: cfunction_vectorcall_FASTCALL_KEYWORDS\n"
            "             at /tmp/python-build/Objects/methodobject.c:443:24"
        )

    message = str(raised.value)
    assert "Invalid data type for Delta Lake: Interval(MonthDayNano)" in message
    assert "<unknown>" not in message and "methodobject" not in message
