"""What the Redis plug-ins (the `redis_streams` source, the `enrich_redis` step) share."""

from __future__ import annotations

from urllib.parse import urlsplit


def check_url(url: str) -> str:
    """`url` if it is a Redis URL without a password (passwords come by environment variable).

    Raises:
        ValueError: another scheme, or a password in the URL.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ValueError("url must start with redis://, rediss:// or unix://")
    if parts.password is not None:
        raise ValueError(
            "url must not contain a password: put it in an environment variable and "
            "name that variable in password_env"
        )
    return url
