"""A synchronous handle on one NATS connection, and the names a bus topic uses in JetStream.

nats-py is asyncio-only while the bus port is synchronous, so each ``NatsSession`` runs
its client on a private event loop in a daemon thread; ``run`` submits a coroutine and
waits for it, translating every nats exception into the headwater tree on the way out.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import logging
import re
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar
from urllib.parse import urlsplit

import msgspec

from headwater.errors import (
    BackendUnavailableError,
    BusError,
    ConfigurationError,
    HeadwaterError,
    MissingDependencyError,
)

__all__ = ["NatsSession", "StreamLayout", "member_token", "servers_of", "translate"]

log = logging.getLogger("headwater.bus.nats")

T = TypeVar("T")

#: Topic tokens become subject tokens and (upper-cased) the stream name.
_TOPIC = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
#: Names usable verbatim as a KV key token; anything else is base64-encoded behind ``=``.
_PLAIN_TOKEN = re.compile(r"^[A-Za-z0-9_-]+$")
#: How long ``close`` waits for the connection and the loop thread to finish.
_CLOSE_TIMEOUT_S = 5.0
#: A connection error repeated within this many seconds is logged at debug level only.
_REPEAT_LOG_S = 60.0


class StreamLayout(msgspec.Struct, frozen=True):
    """The JetStream names of one bus topic: its stream, subjects and KV buckets."""

    topic: str
    stream: str
    offsets_bucket: str
    members_bucket: str

    @classmethod
    def for_topic(cls, topic: str) -> StreamLayout:
        """The layout of ``topic``: ``headwater.signals`` -> stream ``HW_HEADWATER_SIGNALS``."""
        if not _TOPIC.match(topic):
            raise ConfigurationError(
                f"NATS bus topic {topic!r}: use dot-separated tokens of letters, digits, _ and -"
            )
        stream = "HW_" + topic.replace(".", "_").upper()
        return cls(
            topic=topic,
            stream=stream,
            offsets_bucket=f"{stream}_OFFSETS",
            members_bucket=f"{stream}_MEMBERS",
        )

    def subject(self, partition: int) -> str:
        """The subject holding one partition's records."""
        return f"{self.topic}.{partition}"

    @property
    def subjects(self) -> str:
        """The wildcard the stream captures."""
        return f"{self.topic}.*"


def member_token(name: str) -> str:
    """A group or member name as one KV key token (readable when it can be, reversible always)."""
    if _PLAIN_TOKEN.match(name):
        return name
    # Plain tokens never contain '=', so the prefix keeps the two forms apart.
    return "=" + base64.urlsafe_b64encode(name.encode()).rstrip(b"=").decode()


def servers_of(url: str) -> list[str]:
    """The server URLs nats-py connects to: ``nats://a:4222,b:4222?...`` -> two servers."""
    parts = urlsplit(url)
    userinfo, _, hosts = parts.netloc.rpartition("@")
    prefix = f"{parts.scheme}://{userinfo + '@' if userinfo else ''}"
    servers = [prefix + host for host in hosts.split(",") if host]
    if not servers:
        raise ConfigurationError(f"{url}: no NATS server in the URL")
    return servers


def _driver() -> Any:
    try:
        import nats
    except ImportError:
        raise MissingDependencyError("nats", "nats", "nats") from None
    return nats


def translate(exc: BaseException, doing: str) -> HeadwaterError:
    """The headwater error for a nats (or socket/timeout) exception raised while ``doing``."""
    import nats.errors
    import nats.js.errors

    if isinstance(exc, HeadwaterError):
        return exc
    unavailable = (
        nats.errors.TimeoutError,
        nats.errors.NoServersError,
        nats.errors.ConnectionClosedError,
        nats.errors.StaleConnectionError,
        nats.errors.ConnectionReconnectingError,
        nats.errors.NoRespondersError,
        nats.errors.FlushTimeoutError,
        nats.js.errors.ServiceUnavailableError,
        TimeoutError,
        OSError,
    )
    if isinstance(exc, unavailable):
        return BackendUnavailableError(f"NATS unavailable while {doing}: {exc!r}")
    if isinstance(exc, nats.js.errors.NoStreamResponseError):
        return BusError(f"NATS: no stream answered while {doing} (was the stream deleted?)")
    if isinstance(exc, nats.js.errors.APIError):
        if exc.code == 503:
            return BackendUnavailableError(
                f"JetStream unavailable while {doing}: {exc.description}"
            )
        # Client-side subclasses (bucket or key not found) carry no description or codes.
        detail = exc.description or type(exc).__name__
        codes = f" (code {exc.code}, err_code {exc.err_code})" if exc.code else ""
        return BusError(f"JetStream refused {doing}: {detail}{codes}")
    return BusError(f"NATS failed while {doing}: {exc!r}")


class NatsSession:
    """One NATS connection on a private event loop thread, driven synchronously."""

    def __init__(self, servers: list[str], *, timeout: float, name: str) -> None:
        self._driver = _driver()
        self.servers = servers
        self.timeout = timeout
        self._closed = False
        self._last_error = ""
        self._last_error_at = 0.0
        #: Coroutines run on the loop after each reconnect (server state may be gone).
        self.on_reconnect: list[Callable[[], Awaitable[None]]] = []
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name=f"headwater-nats-{name}", daemon=True
        )
        self._thread.start()
        try:
            self.nc: Any = self.run(self._connect(servers, name), "connecting")
        except BaseException:
            self._stop_loop()
            raise
        self.js: Any = self.nc.jetstream(timeout=timeout)

    async def _connect(self, servers: list[str], name: str) -> Any:
        # Reconnect forever in the background; each call bounds its own wait instead, so a
        # server restart heals without reopening the bus.
        return await self._driver.connect(
            servers,
            name=f"headwater-{name}",
            connect_timeout=max(1, int(self.timeout)),
            reconnect_time_wait=0.5,
            max_reconnect_attempts=-1,
            error_cb=self._on_async_error,
            reconnected_cb=self._on_reconnected,
        )

    async def _on_async_error(self, exc: Exception) -> None:
        # Reconnect attempts repeat every half second during an outage: say it once a
        # minute; the operation that needs the server raises its own error meanwhile.
        now = time.monotonic()
        text = repr(exc)
        if text == self._last_error and now - self._last_error_at < _REPEAT_LOG_S:
            log.debug("NATS connection: %s", text)
            return
        self._last_error, self._last_error_at = text, now
        log.warning("NATS connection: %s", text)

    async def _on_reconnected(self) -> None:
        self._last_error = ""
        url = self.nc.connected_url  # hostname and port only: the netloc may hold a password
        log.info("NATS connection: reconnected to %s:%s", url and url.hostname, url and url.port)
        for listener in self.on_reconnect:
            try:
                await listener()
            except Exception as exc:  # noqa: BLE001 - a failed resync is retried by the next call
                log.warning("NATS bus: resync after reconnect failed: %r", exc)

    def run(self, coro: Coroutine[Any, Any, T], doing: str, timeout: float | None = None) -> T:
        """Run ``coro`` on the session's loop and return its result within ``timeout``."""
        if self._closed:
            coro.close()
            raise BusError(f"NATS bus: {doing} after close()")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(self.timeout if timeout is None else timeout)
        except concurrent.futures.TimeoutError as exc:
            if future.done():  # the coroutine's own timeout (a request the server left unanswered)
                raise translate(exc, doing) from exc
            future.cancel()
            raise BackendUnavailableError(
                f"NATS at {', '.join(self.servers)} did not answer in time while {doing}"
            ) from None
        except concurrent.futures.CancelledError:
            raise BackendUnavailableError(f"NATS: {doing} was cancelled") from None
        except Exception as exc:
            raise translate(exc, doing) from exc

    def close(self) -> None:
        """Close the connection, then stop and join the loop thread."""
        if self._closed:
            return
        try:
            self.run(self.nc.close(), "closing the connection", _CLOSE_TIMEOUT_S)
        except HeadwaterError as exc:
            log.warning("NATS bus: closing the connection failed: %s", exc)
        finally:
            self._closed = True
            self._stop_loop()

    def _stop_loop(self) -> None:
        async def cancel_rest() -> None:
            current = asyncio.current_task()
            rest = [t for t in asyncio.all_tasks() if t is not current]
            for task in rest:
                task.cancel()
            await asyncio.gather(*rest, return_exceptions=True)
            await asyncio.get_running_loop().shutdown_asyncgens()

        # Leftover client tasks must end on the loop, or Python warns that they were destroyed.
        try:
            asyncio.run_coroutine_threadsafe(cancel_rest(), self.loop).result(_CLOSE_TIMEOUT_S)
        except (concurrent.futures.TimeoutError, RuntimeError) as exc:
            log.warning("NATS bus: tasks did not stop in time: %r", exc)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(_CLOSE_TIMEOUT_S)
        if not self._thread.is_alive():
            self.loop.close()
