"""The async producer's HTTP/1.1 POST against servers that answer byte by byte as
scripted: sized, chunked and close-delimited answers, kept and lost connections,
timeouts, malformed answers, TLS, and the proxy case left to httpx."""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import ipaddress
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from headwater.client import AsyncHeadwaterClient, HeadwaterClient, _http1
from headwater.client._http1 import Http1Poster, Target
from headwater.client._http1_blocking import BlockingPoster


class Seen:
    """What a scripted server saw: connections accepted and requests read."""

    def __init__(self) -> None:
        self.connections = 0
        self.requests: list[tuple[bytes, bytes]] = []  # (head, body)


async def read_request(reader: asyncio.StreamReader, seen: Seen) -> bool:
    """One request off the connection into ``seen``; False at its end."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return False
    length = next(
        (
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ),
        0,  # a GET
    )
    seen.requests.append((head, await reader.readexactly(length)))
    return True


@asynccontextmanager
async def scripted(
    answer: Callable[[int, Seen], Awaitable[bytes | None] | bytes | None],
    *,
    tls: ssl.SSLContext | None = None,
    close_after: bool | set[int] = False,
    pieces: list[int] | None = None,
) -> AsyncIterator[tuple[str, Seen]]:
    """A server that reads each request and writes ``answer(n, seen)`` (None: no answer,
    the connection closed), in ``pieces`` (sizes of its writes, cycled) when given; it
    closes the connection after each answer (``close_after``), or after the answers to
    the requests numbered in it."""
    seen = Seen()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.connections += 1
        try:
            while await read_request(reader, seen):
                out = answer(len(seen.requests), seen)
                if asyncio.iscoroutine(out):
                    out = await out
                if out is None:
                    break
                assert isinstance(out, bytes)
                at, i = 0, 0
                while at < len(out):
                    size = pieces[i % len(pieces)] if pieces else len(out)
                    writer.write(out[at : at + size])
                    await writer.drain()
                    await asyncio.sleep(0)
                    at, i = at + size, i + 1
                if close_after is True or (close_after and len(seen.requests) in close_after):
                    break
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=tls)
    port = server.sockets[0].getsockname()[1]
    scheme = "https" if tls else "http"
    try:
        yield f"{scheme}://127.0.0.1:{port}", seen
    finally:
        server.close()
        await server.wait_closed()


def sized(body: bytes, *extra: str, status: str = "200 OK") -> bytes:
    head = "".join(f"{h}\r\n" for h in extra)
    return f"HTTP/1.1 {status}\r\n{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


class Poster:
    """The async poster, or the blocking one run on a worker thread (``kind``)."""

    def __init__(self, kind: str, url: str, timeout: float = 5.0) -> None:
        headers = {"Authorization": "Bearer k1"}
        self.inner: Http1Poster | BlockingPoster = (
            Http1Poster(Target(url, headers), timeout)
            if kind == "async"
            else BlockingPoster(Target(url, headers), timeout)
        )

    async def post(self, path: str, body: bytes, content_type: str) -> _http1.Answer:
        if isinstance(self.inner, Http1Poster):
            return await self.inner.post(path, body, content_type)
        return await asyncio.to_thread(self.inner.post, path, body, content_type)

    async def aclose(self) -> None:
        if isinstance(self.inner, Http1Poster):
            await self.inner.aclose()
        else:
            self.inner.close()


KINDS = pytest.mark.parametrize("kind", ["async", "blocking"])


def poster(url: str, timeout: float = 5.0, kind: str = "async") -> Poster:
    return Poster(kind, url, timeout)


@KINDS
def test_a_post_is_one_http11_request_and_its_sized_answer_is_read(kind: str) -> None:
    async def main() -> None:
        async with scripted(lambda n, s: sized(b'{"ok":1}', "Retry-After: 7")) as (url, seen):
            p = poster(f"{url}/gw/", kind=kind)
            answer = await p.post("/v1/signals", b"[1,2,3]", "application/json")
            await p.aclose()
        assert answer == (200, b'{"ok":1}', "7", "")
        ((head, body),) = seen.requests
        lines = head.decode().split("\r\n")
        assert lines[0] == "POST /gw/v1/signals HTTP/1.1"
        port = url.rsplit(":", 1)[1]
        for line in (
            f"Host: 127.0.0.1:{port}",
            "Authorization: Bearer k1",
            "Content-Type: application/json",
            "Content-Length: 7",
        ):
            assert line in lines
        assert body == b"[1,2,3]"

    asyncio.run(main())


@KINDS
def test_posts_share_one_kept_connection_until_the_server_says_close(kind: str) -> None:
    def answer(n: int, seen: Seen) -> bytes:
        return sized(b"x", "Connection: close") if n == 3 else sized(b"x")

    async def main() -> None:
        async with scripted(answer) as (url, seen):
            p = poster(url, kind=kind)
            answers = [await p.post("/v1/signals", b"{}", "application/json") for _ in range(5)]
            await p.aclose()
        assert [a[0] for a in answers] == [200] * 5
        assert seen.connections == 2, "one for the first three, one after the close"

    asyncio.run(main())


@settings(max_examples=40, deadline=None)
@given(
    body=st.binary(max_size=3000),
    cuts=st.lists(st.integers(1, 700), min_size=1, max_size=8),
    pieces=st.lists(st.integers(1, 400), min_size=1, max_size=5),
    extension=st.sampled_from(["", ";name=value", " ;x"]),
    trailer=st.sampled_from(["", "Digest: abc\r\n"]),
)
def test_a_chunked_answer_is_its_chunks_joined_however_the_bytes_arrive(
    body: bytes, cuts: list[int], pieces: list[int], extension: str, trailer: str
) -> None:
    chunks, at, i = [], 0, 0
    while at < len(body):
        chunks.append(body[at : at + cuts[i % len(cuts)]])
        at, i = at + cuts[i % len(cuts)], i + 1
    encoded = b"".join(b"%x%s\r\n%s\r\n" % (len(c), extension.encode(), c) for c in chunks)
    answer = (
        b"HTTP/1.1 207 Multi-Status\r\nTransfer-Encoding: chunked\r\n\r\n"
        + encoded
        + f"0\r\n{trailer}\r\n".encode()
    )

    async def main() -> None:
        async with scripted(lambda n, s: answer, pieces=pieces) as (url, seen):
            p = poster(url)
            first = await p.post("/v1/signals", b"{}", "application/json")
            second = await p.post("/v1/signals", b"{}", "application/json")
            await p.aclose()
        assert first == second == (207, body, None, "")
        assert seen.connections == 1, "the chunked answer ended where its last chunk said"

    asyncio.run(main())


@KINDS
def test_an_answer_without_a_length_runs_to_the_close_and_the_next_post_reconnects(
    kind: str,
) -> None:
    async def main() -> None:
        raw = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it"
        async with scripted(lambda n, s: raw, close_after=True) as (url, seen):
            p = poster(url, kind=kind)
            answers = [await p.post("/v1/signals", b"{}", "application/json") for _ in range(2)]
            await p.aclose()
        assert answers == [(200, b"all of it", None, "")] * 2
        assert seen.connections == 2

    asyncio.run(main())


def test_an_interim_answer_is_passed_over_for_the_final_one() -> None:
    raw = b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + sized(b"done")

    async def main() -> None:
        async with scripted(lambda n, s: raw) as (url, _):
            p = poster(url)
            assert await p.post("/v1/signals", b"{}", "application/json") == (
                200,
                b"done",
                None,
                "",
            )
            await p.aclose()

    asyncio.run(main())


@KINDS
def test_a_kept_connection_the_server_dropped_is_replaced_and_the_post_answered(kind: str) -> None:
    async def main() -> None:
        # The first connection answers once, then reads the next request and closes
        # without a byte: what a server's idle timeout looks like to a reused socket.
        def answer(n: int, seen: Seen) -> bytes | None:
            return None if n == 2 else sized(b"ok")

        async with scripted(answer) as (url, seen):
            p = poster(url, kind=kind)
            first = await p.post("/v1/signals", b"[1]", "application/json")
            second = await p.post("/v1/signals", b"[2]", "application/json")
            await p.aclose()
        assert first == second == (200, b"ok", None, "")
        assert seen.connections == 2
        assert [body for _, body in seen.requests] == [b"[1]", b"[2]", b"[2]"]

    asyncio.run(main())


@KINDS
def test_a_kept_connection_cut_after_the_head_of_its_answer_is_not_sent_again(kind: str) -> None:
    def answer(n: int, seen: Seen) -> bytes:
        return sized(b"ok") if n == 1 else b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"

    async def main() -> None:
        # The second request on the kept connection gets a head, no body, and the close.
        async with scripted(answer, close_after={2}) as (url, seen):
            p = poster(url, kind=kind)
            await p.post("/v1/signals", b"[1]", "application/json")
            began = time.monotonic()
            status, _, _, why = await p.post("/v1/signals", b"[2]", "application/json")
            took = time.monotonic() - began
            await p.aclose()
        assert took < 2, "the cut, not the timeout"
        assert status is None
        assert why
        assert [body for _, body in seen.requests] == [b"[1]", b"[2]"], "answered: not resent"

    asyncio.run(main())


@KINDS
def test_a_connection_closed_mid_answer_is_an_answer_without_status(kind: str) -> None:
    async def main() -> None:
        cut = sized(b"x" * 100)[:-40]
        async with scripted(lambda n, s: cut, close_after=True) as (url, _):
            p = poster(url, kind=kind)
            status, body, retry_after, why = await p.post("/v1/signals", b"{}", "application/json")
            await p.aclose()
        assert (status, body, retry_after) == (None, b"", None)
        assert why.startswith("IncompleteRead")  # asyncio's error, or http.client's

    asyncio.run(main())


@KINDS
def test_no_answer_within_the_timeout_is_an_answer_without_status(kind: str) -> None:
    async def never(n: int, seen: Seen) -> bytes:
        await asyncio.sleep(30)
        return b""

    async def main() -> None:
        async with scripted(never) as (url, _):
            p = poster(url, timeout=0.3, kind=kind)
            began = time.monotonic()
            answer = await p.post("/v1/signals", b"{}", "application/json")
            took = time.monotonic() - began
            await p.aclose()
        assert answer == (None, b"", None, "TimeoutError: no answer within the timeout")
        assert took < 3

    asyncio.run(main())


@KINDS
def test_a_refused_connection_is_an_answer_without_status(kind: str) -> None:
    async def main() -> None:
        async with scripted(lambda n, s: b"") as (url, _):
            pass  # the port is free again
        p = poster(url, kind=kind)
        status, _, _, why = await p.post("/v1/signals", b"{}", "application/json")
        assert status is None
        assert why.startswith(("ConnectionRefusedError", "OSError"))

    asyncio.run(main())


MALFORMED = {
    "not-http": b"SPDY/3 200 OK\r\nContent-Length: 0\r\n\r\n",
    "status": b"HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n",
    "header": b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
    "two-lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\nx",
    "negative-length": b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
    "chunk-size": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    "chunk-end": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n",
    "encoding": b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 1\r\n\r\nx",
    "bad-gzip": b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 3\r\n\r\nabc",
    "long-head": b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 70_000 + b"\r\n\r\n",
}
#: What http.client refuses too (it reads a header line without a colon, a chunk's end
#: and a length it cannot parse leniently: the blocking poster takes those as it does).
STRICT_IN_HTTP_CLIENT = ("not-http", "status", "chunk-size", "encoding", "bad-gzip", "long-head")


@pytest.mark.parametrize(
    ("kind", "case"),
    [("async", case) for case in MALFORMED]
    + [("blocking", case) for case in STRICT_IN_HTTP_CLIENT],
)
def test_a_malformed_answer_is_an_answer_without_status_and_a_new_connection(
    kind: str, case: str
) -> None:
    raw = MALFORMED[case]

    async def main() -> None:
        async with scripted(lambda n, s: raw if n == 1 else sized(b"ok")) as (url, seen):
            p = poster(url, kind=kind)
            status, body, _, why = await p.post("/v1/signals", b"{}", "application/json")
            after = await p.post("/v1/signals", b"{}", "application/json")
            await p.aclose()
        assert (status, body) == (None, b"")
        assert why
        assert after == (200, b"ok", None, "")
        assert seen.connections == 2

    asyncio.run(main())


@KINDS
def test_a_gzip_answer_is_inflated_and_one_past_the_bound_refused(
    monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    small = gzip.compress(b'{"accepted": 2}')
    bomb = gzip.compress(b"0" * 100_000)

    def answer(n: int, seen: Seen) -> bytes:
        return sized(small if n == 1 else bomb, "Content-Encoding: gzip")

    async def main() -> None:
        async with scripted(answer) as (url, _):
            p = poster(url, kind=kind)
            first = await p.post("/v1/signals", b"{}", "application/json")
            monkeypatch.setattr(_http1, "MAX_BODY_BYTES", 50_000)
            status, _, _, why = await p.post("/v1/signals", b"{}", "application/json")
            await p.aclose()
        assert first == (200, b'{"accepted": 2}', None, "")
        assert status is None
        assert "inflates past 50000" in why

    asyncio.run(main())


def test_a_header_with_a_line_break_is_refused_before_any_request() -> None:
    with pytest.raises(ValueError, match="line break"):
        AsyncHeadwaterClient("http://127.0.0.1:1", "key\r\nX-Admin: yes")


def test_a_proxy_named_by_the_environment_keeps_the_client_on_httpx(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    direct = AsyncHeadwaterClient("http://gateway.internal:8000", "k")
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.internal:3128")
    proxied = AsyncHeadwaterClient("http://gateway.internal:8000", "k")
    monkeypatch.setenv("NO_PROXY", "gateway.internal")
    exempt = AsyncHeadwaterClient("http://gateway.internal:8000", "k")
    assert isinstance(direct._http, Http1Poster)
    assert isinstance(proxied._http, httpx.AsyncClient)
    assert isinstance(exempt._http, Http1Poster)
    for client in (direct, proxied, exempt):
        asyncio.run(client.aclose())


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


@KINDS
def test_https_verifies_the_server_against_the_bundle_httpx_would_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    cert_file, key_file = _self_signed(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert_file, key_file)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)

    async def main() -> None:
        async with scripted(lambda n, s: sized(b"secure"), tls=server_tls) as (url, seen):
            untrusted = poster(
                url, kind=kind
            )  # certifi's bundle: the self-signed server is refused
            status, _, _, why = await untrusted.post("/v1/signals", b"{}", "application/json")
            assert status is None
            assert "CERTIFICATE_VERIFY_FAILED" in why
            monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))
            trusted = poster(url, kind=kind)
            answer = await trusted.post("/v1/signals", b"{}", "application/json")
            await trusted.aclose()
        assert answer == (200, b"secure", None, "")
        assert len(seen.requests) == 1

    asyncio.run(main())


def test_the_blocking_client_posts_through_http_client_unless_a_proxy_applies(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    with HeadwaterClient("http://gateway.internal:8000", "k") as direct:
        assert isinstance(direct._http, BlockingPoster)
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.internal:3128")
    with HeadwaterClient("http://gateway.internal:8000", "k") as proxied:
        assert isinstance(proxied._http, httpx.Client)
