"""The `nats` stream source: a durable pull consumer of a NATS JetStream stream.

nats-py is asyncio and the `StreamSource` protocol is synchronous, so each source owns a
private event loop running in a daemon thread; every call submits one coroutine to it and
waits for the result. Positions are stream sequences (one partition: the stream name).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import threading
import time
from collections import deque
from collections.abc import Coroutine, Mapping
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import nats
import nats.errors
import nats.js.errors
import pyarrow as pa
import pyarrow.compute as pc
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    ConsumerInfo,
    DeliverPolicy,
    StorageType,
    StreamConfig,
)
from pydantic import Field

from sluiceway.core import registry
from sluiceway.errors import ConfigError, SourceError, TransientError
from sluiceway.streaming.base import (
    MESSAGE_SCHEMA,
    Fetched,
    StreamSourceConfig,
    behind_committed,
    integer_order_keys,
)

T = TypeVar("T")

START_HINT = "start it with `bash scripts/services/nats.sh`"
_ACK = b"+ACK"
_CALL_MARGIN_S = 10.0
_MIN_FETCH_TIMEOUT_S = 0.05
_PULL_MAX = 10_000
"""Most messages one pull asks for: the inbox subscription's pending buffer must never fill
(nats-py would drop what does not fit, and the dropped messages would come back only after
ack_wait, behind newer committed ones)."""
_REDELIVERY_MARGIN_S = 0.5
# Positions of (deliveries, stream sequence, timestamp ns) in a JetStream ack subject, by
# token count: v1 `$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ns>.<pending>`;
# v2 adds `<domain>.<account hash>` after `ACK` and may end with a random token.
_V1, _V2 = (4, 5, 7), (6, 7, 9)
_ACK_FIELDS = {9: _V1, 11: _V2, 12: _V2}
_UNREACHABLE = (
    nats.errors.NoServersError,
    nats.errors.ConnectionClosedError,
    nats.errors.StaleConnectionError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.NoRespondersError,
    nats.errors.TimeoutError,
    nats.js.errors.ServiceUnavailableError,
    OSError,
    TimeoutError,
)


class NatsSourceConfig(StreamSourceConfig):
    """A durable pull consumer of one JetStream stream."""

    type: Literal["nats"] = Field("nats", description="A NATS JetStream stream.")
    url: str = Field(
        "nats://127.0.0.1:4222", description="Server URL, without credentials (see *_env)."
    )
    stream: str = Field(min_length=1, description="The JetStream stream to consume.")
    subject: str = Field(
        min_length=1, description="Filter subject of the consumer, e.g. 'events.>'."
    )
    durable: str = Field(
        "sluiceway", min_length=1, description="Durable consumer name (created if missing)."
    )
    create_stream: bool = Field(
        False, description="Create the stream with `subject` if it does not exist."
    )
    ack_wait_s: float = Field(
        30.0, gt=0, description="Seconds before an unacknowledged message is redelivered."
    )
    connect_timeout_s: float = Field(
        5.0, gt=0, description="Seconds to wait for the server when connecting."
    )
    token_env: str | None = Field(None, description="Environment variable holding a token.")
    user_env: str | None = Field(None, description="Environment variable holding the user.")
    password_env: str | None = Field(None, description="Environment variable holding the password.")


class NatsSource:
    """Fetches from and acknowledges to a JetStream durable pull consumer."""

    fetch_ahead = True
    """The runner may fetch the next batch on another thread while it commits this one:
    `fetch` and `lag` both run as coroutines on the source's own event loop."""

    def __init__(self, config: NatsSourceConfig) -> None:
        self.config = config
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._nc: Client | None = None
        self._js: Any = None
        self._puller: _Puller | None = None
        self._held_until = 0.0
        self._dropped = False

    @property
    def address(self) -> str:
        """host:port of the server, without credentials."""
        return urlsplit(self.config.url).netloc.rpartition("@")[2] or self.config.url

    @property
    def where(self) -> str:
        return f"{self.address}, stream {self.config.stream!r}, consumer {self.config.durable!r}"

    def open(self) -> None:
        """Connect, check or create the stream, and create or update the durable consumer.

        Re-entrant: a second call drops the old connection and connects again (after a
        server restart, for example).

        Raises:
            TransientError: the server cannot be reached.
            SourceError: the stream is missing, the subject does not fit it, bad credentials.
            ConfigError: a credential variable named in the config is not set.
        """
        credentials = _credentials(self.config)
        self._dropped = False
        if self._loop is None:
            self._start_loop()
        self._call(self._close_async(), timeout_s=self.config.connect_timeout_s)
        self._call(self._open_async(credentials), timeout_s=3 * self.config.connect_timeout_s)

    def fetch(self, max_messages: int, timeout_s: float) -> Fetched:
        """Up to `max_messages` messages, waiting at most `timeout_s` for the first one."""
        timeout_s = max(timeout_s, _MIN_FETCH_TIMEOUT_S)
        held_s = self._held_until - time.monotonic()
        if held_s > 0:
            time.sleep(min(held_s, timeout_s))
            if held_s > timeout_s:
                return Fetched(messages=self._to_table([]), handle=[])
        msgs = self._call(
            self._fetch_async(min(max_messages, _PULL_MAX), timeout_s), timeout_s=timeout_s
        )
        if self._dropped:
            # Dropped messages are redelivered after ack_wait, after newer ones: reopening
            # holds every fetch until then, so they come back first.
            raise TransientError(
                f"NATS client dropped messages it could not buffer (slow consumer) at "
                f"{self.where}; reopening so they are redelivered before newer ones",
                context={"source": "nats", "stream": self.config.stream},
            )
        return Fetched(messages=self._to_table(msgs), handle=msgs)

    def ack(self, fetched: Fetched) -> None:
        """Acknowledge every message of `fetched`; returns once the server has them all.

        The acknowledgements go through the current connection, so a batch fetched before
        a reopen is acknowledged after it too.

        Raises:
            TransientError: the server cannot be reached (the runner reopens and retries).
        """
        if fetched.handle:
            self._call(self._ack_async(fetched.handle), timeout_s=self.config.connect_timeout_s)

    def positions(self, fetched: Fetched) -> dict[str, str]:
        """The highest stream sequence of the batch (partition: the stream name)."""
        if not fetched.count:
            return {}
        top = pc.max(pc.cast(fetched.messages.column("msg_id"), pa.int64())).as_py()
        return {self.config.stream: str(top)}

    def position_after(self, msg_id: str, committed: str) -> bool:
        """True when stream sequence `msg_id` is greater than `committed`."""
        return int(msg_id) > int(committed)

    def order_keys(self, msg_ids: pa.Array) -> list[pa.Array]:
        """Integer columns ordering `msg_ids`, for comparing a whole batch at once."""
        return integer_order_keys(msg_ids)

    def lag(self) -> int | None:
        """Messages of the stream this consumer has not been delivered yet."""
        info = self._call(self._consumer_info_async(), timeout_s=self.config.connect_timeout_s)
        return int(info.num_pending) if info.num_pending is not None else None

    def close(self) -> None:
        """Disconnect and stop the event loop; never raises."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(Exception):
            self._call(self._shutdown_async(), timeout_s=self.config.connect_timeout_s)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        if not thread.is_alive():
            loop.close()
        self._loop = self._thread = None

    def _start_loop(self) -> None:
        loop = asyncio.new_event_loop()
        thread = threading.Thread(
            target=loop.run_forever, name=f"nats-{self.config.stream}", daemon=True
        )
        thread.start()
        self._loop, self._thread = loop, thread

    def _call(self, coro: Coroutine[Any, Any, T], *, timeout_s: float) -> T:
        if self._loop is None:
            coro.close()
            raise SourceError(f"NATS source used before open() ({self.where}).")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout=timeout_s + _CALL_MARGIN_S)
        except _UNREACHABLE as exc:
            future.cancel()
            raise TransientError(
                f"NATS server not reachable at {self.where} ({type(exc).__name__}: {exc}); "
                f"{START_HINT}, or check `url`.",
                context={"source": "nats", "stream": self.config.stream},
            ) from exc
        except nats.js.errors.APIError as exc:
            raise self._refused("a JetStream request", exc) from exc

    def _refused(self, what: str, exc: nats.js.errors.APIError, hint: str = "") -> SourceError:
        """A JetStream API refusal as a SourceError saying what was refused, where, and why."""
        hint = hint or (
            "Check the stream and consumer with `nats stream info` / `nats consumer info`."
        )
        return SourceError(
            f"NATS JetStream at {self.address} refused {what} for stream "
            f"{self.config.stream!r}, subject {self.config.subject!r}: "
            f"{exc.description or exc} (code {exc.code}, err_code {exc.err_code}). {hint}",
            context={"source": "nats", "stream": self.config.stream},
        )

    async def _open_async(self, credentials: dict[str, str]) -> None:
        seen: deque[Exception] = deque(maxlen=20)
        try:
            self._nc = await self._connect(credentials, seen)
        except nats.errors.NoServersError:
            if any("authorization violation" in str(e).lower() for e in seen):
                raise SourceError(
                    f"NATS refused the credentials at {self.where}: check the variables "
                    "named by token_env / user_env / password_env.",
                    context={"source": "nats", "stream": self.config.stream},
                ) from None
            raise
        js = self._nc.jetstream()
        await self._ensure_stream(js)
        info = await self._ensure_consumer(js)
        # Messages an earlier owner received and never acknowledged come back only after
        # ack_wait, while new ones would be delivered at once. The runner would commit the
        # new ones first and then take the late ones for committed (their sequence is lower):
        # lost. Fetching nothing until ack_wait has passed makes the server redeliver them
        # first, as the StreamSource contract asks.
        has_unacked = bool(info.num_ack_pending)
        hold_s = self.config.ack_wait_s + _REDELIVERY_MARGIN_S if has_unacked else 0.0
        self._held_until = time.monotonic() + hold_s
        self._js = js
        self._puller = await _Puller.start(self._nc, self.config.stream, self.config.durable)

    async def _connect(self, credentials: dict[str, str], seen: deque[Exception]) -> Client:
        async def remember(exc: Exception) -> None:
            # nats-py reports why each attempt failed here and only raises NoServersError;
            # it also reports messages it dropped (a full subscription buffer) here.
            seen.append(exc)
            if isinstance(exc, nats.errors.SlowConsumerError):
                self._dropped = True

        return await nats.connect(
            self.config.url,
            connect_timeout=self.config.connect_timeout_s,
            max_reconnect_attempts=5,
            reconnect_time_wait=0.5,
            error_cb=remember,
            name=f"sluiceway:{self.config.durable}",
            **credentials,
        )

    def resuming(self, committed: Mapping[str, str]) -> None:
        """Told by the runner before `open`: the stream sequence the table holds, so a
        recreated stream is recognised instead of skipped."""
        self._committed = dict(committed)

    def _check_not_behind(self, last_seq: int) -> None:
        committed = getattr(self, "_committed", {}).get(self.config.stream)
        if committed is not None and last_seq < int(committed):
            raise behind_committed("NATS", self.where, self.config.stream, committed, last_seq)

    async def _ensure_stream(self, js: Any) -> None:
        try:
            info = await js.stream_info(self.config.stream)
            self._check_not_behind(int(info.state.last_seq))
            return
        except nats.js.errors.NotFoundError:
            self._check_not_behind(0)  # gone, yet the table holds its messages: deleted
            if not self.config.create_stream:
                raise SourceError(
                    f"NATS stream {self.config.stream!r} does not exist at {self.where}: "
                    "create it (nats stream add) or set `create_stream: true`.",
                    context={"source": "nats", "stream": self.config.stream},
                ) from None
        stream = StreamConfig(
            name=self.config.stream, subjects=[self.config.subject], storage=StorageType.FILE
        )
        try:
            await js.add_stream(stream)
        except nats.js.errors.APIError as exc:
            if isinstance(exc, nats.js.errors.ServiceUnavailableError):
                raise
            holder = "the stream that holds it"
            with contextlib.suppress(Exception):
                holder = repr(await js.find_stream_name_by_subject(self.config.subject))
            raise self._refused(
                "to create the stream (create_stream: true)",
                exc,
                f"A subject belongs to one stream only: to read it, set `stream` to {holder} "
                "and `create_stream: false`; otherwise pick another `subject`.",
            ) from exc

    async def _ensure_consumer(self, js: Any) -> ConsumerInfo:
        consumer = ConsumerConfig(
            durable_name=self.config.durable,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=self.config.ack_wait_s,
            max_deliver=self.config.max_deliveries + 1,
            max_ack_pending=-1,
            filter_subject=self.config.subject,
        )
        try:
            return await js.add_consumer(self.config.stream, consumer)
        except nats.js.errors.APIError as exc:
            if isinstance(exc, nats.js.errors.ServiceUnavailableError):
                raise
            raise self._refused(
                f"to create or update consumer {self.config.durable!r}",
                exc,
                "The subject must be one the stream holds; an existing consumer may only "
                "change editable settings (delete it to change others).",
            ) from exc

    async def _fetch_async(self, max_messages: int, timeout_s: float) -> list[Msg]:
        if self._nc is None or self._puller is None or not self._nc.is_connected:
            raise nats.errors.ConnectionClosedError
        msgs = await self._puller.fetch(max_messages, timeout_s)
        if not msgs and not self._nc.is_connected:
            raise nats.errors.ConnectionClosedError
        return msgs

    async def _consumer_info_async(self) -> ConsumerInfo:
        if self._js is None:
            raise nats.errors.ConnectionClosedError
        info: ConsumerInfo = await self._js.consumer_info(self.config.stream, self.config.durable)
        return info

    async def _ack_async(self, msgs: list[Msg]) -> None:
        # An ack is a publish to the message's reply subject, valid from any connection;
        # sending it through the current one (not `msg.ack()`, bound to the connection the
        # message came on) keeps a batch fetched before a reopen acknowledgeable after it.
        # A message already acknowledged is skipped: a batch acknowledged again is a no-op.
        nc = self._nc
        if nc is None or not nc.is_connected:
            raise nats.errors.ConnectionClosedError
        pending = [m for m in msgs if not m._ackd]
        if not pending:
            return
        for msg in pending[:-1]:
            await nc.publish(msg.reply, _ACK)
        await nc.request(pending[-1].reply, _ACK, timeout=self.config.connect_timeout_s)
        for msg in pending:
            msg._ackd = True

    async def _close_async(self) -> None:
        nc, self._nc, self._js, self._puller = self._nc, None, None, None
        if nc is not None and not nc.is_closed:
            with contextlib.suppress(Exception):  # the old connection may be gone already
                await nc.close()

    async def _shutdown_async(self) -> None:
        await self._close_async()
        # nats-py leaves tasks behind (subscription waiters); finishing them here keeps them
        # from being collected after the loop is closed.
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    def _to_table(self, msgs: list[Msg]) -> pa.Table:
        # The ack subject carries what `Msg.metadata` parses; reading the three fields we
        # need straight from it avoids a datetime and two dataclasses per message.
        tokens = [m.reply.split(".") for m in msgs]
        delivered, sequence, stamp = _ACK_FIELDS.get(len(tokens[0]) if tokens else 0, _V2)
        columns = [
            pa.array([self.config.stream] * len(msgs), pa.string()),
            pa.array([t[sequence] for t in tokens], pa.string()),
            pa.array([m.data for m in msgs], pa.binary()),
            pa.array([int(t[stamp]) // 1_000_000 for t in tokens], pa.int64()).cast(
                MESSAGE_SCHEMA.field("enqueued_at").type
            ),
            pa.array([int(t[delivered]) for t in tokens], pa.int32()),
        ]
        return pa.Table.from_arrays(columns, schema=MESSAGE_SCHEMA)


class _Puller:
    """Pull requests of a durable consumer, answered on a private inbox.

    nats-py's `PullSubscription.fetch` spends a task and a `wait_for` on every message (about
    25k msg/s); this sends the same JetStream pull requests (`CONSUMER.MSG.NEXT`) and collects
    the replies in a subscription callback (about 100k msg/s). Every request has its own reply
    subject, so a status that ends an old request (404 no messages, 408 expired) never ends a
    newer one. Messages that arrive after a fetch returned (a lingering request answered
    late) are kept and come first in the next fetch.
    """

    def __init__(self, nc: Client, subject: str, inbox: str) -> None:
        self._nc, self._next_subject, self._inbox = nc, subject, inbox
        self._buffer: deque[Msg] = deque()
        self._request = ""
        self._wanted = 0
        self._is_lingering = False
        self._numbers = itertools.count()
        self._answered = asyncio.Event()

    @classmethod
    async def start(cls, nc: Client, stream: str, durable: str) -> _Puller:
        puller = cls(nc, f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}", nc.new_inbox())
        await nc.subscribe(f"{puller._inbox}.*", cb=puller._on_message)
        return puller

    async def fetch(self, max_messages: int, timeout_s: float) -> list[Msg]:
        """Up to `max_messages`: what is buffered or available now, else the first to come."""
        deadline = time.monotonic() + timeout_s
        await self._pull({"batch": max_messages - len(self._buffer), "no_wait": True}, deadline)
        if not self._buffer:
            expires_ns = int((deadline - time.monotonic()) * 1e9) - 1_000_000
            if expires_ns > 0:
                await self._pull({"batch": max_messages, "expires": expires_ns}, deadline)
        count = min(max_messages, len(self._buffer))
        return [self._buffer.popleft() for _ in range(count)]

    async def _pull(self, request: dict[str, Any], deadline: float) -> None:
        if request["batch"] <= 0:
            return
        self._request = f"{self._inbox}.{next(self._numbers)}"
        self._wanted = len(self._buffer) + request["batch"]
        self._is_lingering = "expires" in request
        self._answered.clear()
        await self._nc.publish(
            self._next_subject, json.dumps(request).encode(), reply=self._request
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._answered.wait(), max(deadline - time.monotonic(), 0))

    async def _on_message(self, msg: Msg) -> None:
        if msg.headers and msg.headers.get("Status"):
            if msg.subject == self._request:
                self._answered.set()
            return
        self._buffer.append(msg)
        if len(self._buffer) >= self._wanted or self._is_lingering:
            self._answered.set()


def _credentials(config: NatsSourceConfig) -> dict[str, str]:
    """nats.connect keyword arguments read from the variables the config names."""
    names = {"token": config.token_env, "user": config.user_env, "password": config.password_env}
    found: dict[str, str] = {}
    for key, variable in names.items():
        if variable is None:
            continue
        value = os.environ.get(variable)
        if value is None:
            raise ConfigError(
                f"NATS {key} variable {variable!r} (sources.*.{key}_env) is not set: "
                f"export it before running.",
                context={"source": "nats", "stream": config.stream},
            )
        found[key] = value
    return found


registry.register("source", "nats", NatsSourceConfig, NatsSource)

__all__ = ["NatsSource", "NatsSourceConfig"]
