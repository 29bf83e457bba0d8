"""Outgoing webhooks (app/core/webhooks.py): signatures, URL rules, backoff, and delivery against a real
local HTTP receiver. No Ray, no network beyond 127.0.0.1; the resolver is injected for host names."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from app.core import webhooks
from app.core.webhooks import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Delivery,
    WebhookUrlError,
    backoff_delays,
    check_webhook_url,
    deliver,
    sign,
    verify,
)

SECRET = "whsec_test_0123456789"
PAYLOAD = {"request_id": "req-1", "status": "completed", "clips": [{"url": "https://cdn.example/c.mp4", "score": 0.9}]}
WAIT_S = 10.0


def resolver_for(*addresses: str) -> Callable[..., list[tuple]]:
    """A getaddrinfo stand-in answering every host with `addresses`."""

    def resolve(host: str, port: int, type: int = 0) -> list[tuple]:
        out = []
        for address in addresses:
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            sockaddr = (address, port, 0, 0) if family == socket.AF_INET6 else (address, port)
            out.append((family, socket.SOCK_STREAM, 6, "", sockaddr))
        return out

    return resolve


def no_such_host(host: str, port: int, type: int = 0) -> list[tuple]:
    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


# ---- signatures --------------------------------------------------------------------------------


def test_sign_is_hmac_sha256_of_timestamp_dot_body() -> None:
    body = b'{"a":1}'
    expected = hmac.new(SECRET.encode(), b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign(SECRET, 1700000000, body) == "sha256=" + expected


def test_sign_verify_round_trip() -> None:
    body = json.dumps(PAYLOAD).encode()
    now = time.time()
    ts = int(now)
    assert verify(SECRET, body, str(ts), sign(SECRET, ts, body), now=now)
    assert verify(SECRET, body, str(ts), sign(SECRET, ts, body))  # default clock


def test_verify_rejects_tampering_wrong_secret_and_replay() -> None:
    body, now = b'{"status":"completed"}', 1_800_000_000.0
    ts = int(now)
    signature = sign(SECRET, ts, body)
    assert verify(SECRET, body, str(ts), signature, now=now)
    assert not verify(SECRET, body + b" ", str(ts), signature, now=now)  # changed body
    assert not verify("another-secret", body, str(ts), signature, now=now)  # wrong secret
    assert not verify(SECRET, body, str(ts + 1), signature, now=now)  # timestamp is signed too
    old = ts - 301
    assert not verify(SECRET, body, str(old), sign(SECRET, old, body), now=now)  # replay
    future = ts + 301
    assert not verify(SECRET, body, str(future), sign(SECRET, future, body), now=now)
    assert verify(SECRET, body, str(old), sign(SECRET, old, body), tolerance_s=400, now=now)


@pytest.mark.parametrize("timestamp", ["", "abc", "1.5", "1e9", "-5", "0x10", "1_700_000_000", "١٧٠٠"])
def test_verify_rejects_non_int_timestamps(timestamp: str) -> None:
    body = b"{}"
    assert not verify(SECRET, body, timestamp, sign(SECRET, 1700000000, body), now=1700000000)


def test_verify_survives_malformed_signatures() -> None:
    body, ts = b"{}", 1700000000
    for bad in ["", "sha256=", "sha256=zz", "sha256=é", sign(SECRET, ts, body)[:-1]]:
        assert not verify(SECRET, body, str(ts), bad, now=ts)


# ---- URL rules ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",  # cloud metadata (link-local)
        "http://127.0.0.1/hook",
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "http://10.1.2.3/hook",
        "http://192.168.1.10/hook",
        "http://172.16.0.1/hook",
        "http://100.64.0.1/hook",  # shared (carrier-grade NAT)
        "http://0.0.0.0/hook",
        "http://224.0.0.1/hook",  # multicast
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",  # IPv4-mapped loopback
        "http://[fe80::1]/hook",
        "http://2130706433/hook",  # decimal 127.0.0.1
        "http://0x7f.1/hook",
        "http://127.1/hook",
    ],
)
def test_check_webhook_url_refuses_non_public_addresses(url: str) -> None:
    with pytest.raises(WebhookUrlError, match="address"):
        check_webhook_url(url)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://93.184.215.14/hook", "http or https"),
        ("file:///etc/passwd", "http or https"),
        ("javascript:alert(1)", "http or https"),
        ("93.184.215.14/hook", "http or https"),
        ("http://", "no host"),
        ("http:///hook", "no host"),
        ("https://user:pass@93.184.215.14/hook", "credentials"),
        ("https://user@93.184.215.14/hook", "credentials"),
        ("https://93.184.215.14:99999/hook", "not valid"),
        ("https://93.184.215.14/" + "a" * 2048, "longer than"),
        ("", "empty"),
        ("https://93.184.215.14/a b", "whitespace"),
        ("https://example.com\\@127.0.0.1/", "backslash"),
    ],
)
def test_check_webhook_url_refuses_bad_urls(url: str, reason: str) -> None:
    with pytest.raises(WebhookUrlError, match=reason):
        check_webhook_url(url, resolve=resolver_for("93.184.215.14"))


@pytest.mark.parametrize(
    "address",
    [
        "10.0.0.5",
        "127.0.0.1",
        "169.254.169.254",
        "100.100.100.200",
        "240.0.0.1",  # reserved
        "::ffff:10.0.0.1",  # IPv4-mapped private
        "2002:7f00:1::",  # 6to4 of 127.0.0.1
        "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
        "fe80::1%eth0",
        "fd00::1",  # unique local
    ],
)
def test_check_webhook_url_refuses_a_host_resolving_to_non_public(address: str) -> None:
    with pytest.raises(WebhookUrlError, match="public addresses only"):
        check_webhook_url("https://hooks.example.com/x", resolve=resolver_for(address))


def test_check_webhook_url_refuses_when_any_address_is_private() -> None:
    with pytest.raises(WebhookUrlError, match="private"):
        check_webhook_url("https://hooks.example.com/x", resolve=resolver_for("93.184.215.14", "192.168.0.7"))


def test_check_webhook_url_refuses_unresolvable_hosts() -> None:
    with pytest.raises(WebhookUrlError, match="does not resolve"):
        check_webhook_url("https://no-such-host.invalid/x", resolve=no_such_host)
    with pytest.raises(WebhookUrlError, match="does not resolve"):
        check_webhook_url("https://empty.example.com/x", resolve=resolver_for())


def test_check_webhook_url_accepts_public_addresses() -> None:
    assert check_webhook_url("  https://93.184.215.14/hook?x=1  ") == "https://93.184.215.14/hook?x=1"
    assert check_webhook_url("http://[2606:4700:4700::1111]:8443/h") == "http://[2606:4700:4700::1111]:8443/h"
    seen: list[tuple[str, int]] = []

    def resolve(host: str, port: int, type: int = 0) -> list[tuple]:
        seen.append((host, port))
        assert type == socket.SOCK_STREAM
        return resolver_for("93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c")(host, port, type)

    assert check_webhook_url("https://Hooks.Example.com/x", resolve=resolve) == "https://Hooks.Example.com/x"
    assert check_webhook_url("http://hooks.example.com:8080/x", resolve=resolve) == "http://hooks.example.com:8080/x"
    assert seen == [("hooks.example.com", 443), ("hooks.example.com", 8080)]


def test_allow_private_accepts_local_addresses_but_not_bad_urls() -> None:
    assert check_webhook_url("http://127.0.0.1:9000/hook", allow_private=True) == "http://127.0.0.1:9000/hook"
    assert check_webhook_url("http://h.internal/x", allow_private=True, resolve=resolver_for("10.0.0.5"))
    with pytest.raises(WebhookUrlError):
        check_webhook_url("ftp://127.0.0.1/", allow_private=True)
    with pytest.raises(WebhookUrlError, match="does not resolve"):
        check_webhook_url("http://nope.invalid/", allow_private=True, resolve=no_such_host)


# ---- backoff -----------------------------------------------------------------------------------


def test_backoff_delays() -> None:
    assert backoff_delays(1, 1.0) == []
    assert backoff_delays(0, 1.0) == []
    assert backoff_delays(5, 1.0) == [1.0, 2.0, 4.0, 8.0]
    assert backoff_delays(4, 0.5, factor=3.0) == [0.5, 1.5, 4.5]
    assert backoff_delays(8, 1.0, cap_s=10.0) == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]
    assert backoff_delays(3, 100.0) == [60.0, 60.0]  # default cap
    assert backoff_delays(2000, 1.0)[-1] == 60.0  # no overflow
    with pytest.raises(ValueError):
        backoff_delays(3, -1.0)


# ---- a real local receiver ---------------------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: Message
    body: bytes


class Receiver:
    """A stdlib HTTP server on 127.0.0.1 (port 0) answering with respond(n) for its n-th request."""

    def __init__(self, respond: Callable[[int], tuple[int, dict[str, str]]]) -> None:
        self.requests: list[Received] = []
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._cond:  # recorded before answering: the sender sees the answer after this
                    receiver.requests.append(Received(self.path, self.headers, body))
                    n = len(receiver.requests)
                    receiver._cond.notify_all()
                status, headers = respond(n)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            do_POST = _handle
            do_GET = _handle

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def wait_for(self, count: int, timeout_s: float = WAIT_S) -> list[Received]:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.requests) >= count, timeout_s), (
                f"receiver got {len(self.requests)} of {count} requests"
            )
            return list(self.requests)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(WAIT_S)


@pytest.fixture
def receiver_factory() -> Iterator[Callable[[Callable[[int], tuple[int, dict[str, str]]]], Receiver]]:
    made: list[Receiver] = []

    def make(respond: Callable[[int], tuple[int, dict[str, str]]]) -> Receiver:
        made.append(Receiver(respond))
        return made[-1]

    yield make
    for r in made:
        r.close()


def closed_port_url() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


def test_deliver_retries_until_2xx_against_a_real_receiver(receiver_factory) -> None:
    receiver = receiver_factory(lambda n: (500, {}) if n <= 2 else (200, {}))
    waits: list[float] = []
    seen: list[Delivery] = []
    delivery = deliver(
        receiver.url,
        "search.completed",
        PAYLOAD,
        SECRET,
        delivery_id="dlv-123",
        attempts=5,
        first_backoff_s=0.01,
        timeout_s=5.0,
        allow_private=True,
        on_attempt=seen.append,
        sleep=waits.append,
    )
    assert delivery.delivered
    assert [a.status_code for a in delivery.attempts] == [500, 500, 200]
    assert [a.error for a in delivery.attempts] == ["HTTP 500", "HTTP 500", None]
    assert all(a.duration_ms >= 0 and a.at.endswith("+00:00") for a in delivery.attempts)
    assert waits == [0.01, 0.02]
    assert delivery.delivery_id == "dlv-123" and delivery.url == receiver.url and delivery.event == "search.completed"

    requests = receiver.wait_for(3)
    assert len(requests) == 3
    expected_body = json.dumps(PAYLOAD, separators=(",", ":"), sort_keys=True).encode()
    for r in requests:
        assert r.path == "/hook"
        assert r.body == expected_body
        assert r.headers["Content-Type"] == "application/json"
        assert r.headers["User-Agent"] == "facereel-webhooks/1"
        assert r.headers[EVENT_HEADER] == "search.completed"
        assert r.headers[DELIVERY_HEADER] == "dlv-123"
        assert r.headers[SIGNATURE_HEADER].startswith("sha256=")
        assert verify(SECRET, r.body, r.headers[TIMESTAMP_HEADER], r.headers[SIGNATURE_HEADER])
        assert not verify("wrong", r.body, r.headers[TIMESTAMP_HEADER], r.headers[SIGNATURE_HEADER])

    # on_attempt saw the delivery growing, each a snapshot
    assert [len(d.attempts) for d in seen] == [1, 2, 3]
    assert [d.delivered for d in seen] == [False, False, True]


def test_deliver_stops_on_a_client_error(receiver_factory) -> None:
    receiver = receiver_factory(lambda n: (400, {}))
    waits: list[float] = []
    delivery = deliver(receiver.url, "index_job.completed", {"job": 1}, SECRET, allow_private=True, sleep=waits.append)
    assert not delivery.delivered
    assert [(a.status_code, a.error) for a in delivery.attempts] == [(400, "HTTP 400")]
    assert waits == []
    assert len(receiver.wait_for(1)) == 1


def test_deliver_does_not_follow_redirects(receiver_factory) -> None:
    target = receiver_factory(lambda n: (200, {}))
    redirector = receiver_factory(lambda n: (302, {"Location": target.url}))
    delivery = deliver(redirector.url, "search.completed", PAYLOAD, SECRET, allow_private=True, sleep=lambda s: None)
    assert not delivery.delivered
    assert len(delivery.attempts) == 1
    assert delivery.attempts[0].status_code == 302
    assert "redirect" in (delivery.attempts[0].error or "")
    assert len(redirector.wait_for(1)) == 1
    assert target.requests == []  # deliver returned; a followed redirect would have been recorded by now


def test_deliver_to_a_closed_port_records_connection_errors() -> None:
    waits: list[float] = []
    seen: list[Delivery] = []
    delivery = deliver(
        closed_port_url(),
        "search.completed",
        PAYLOAD,
        SECRET,
        attempts=3,
        first_backoff_s=0.5,
        timeout_s=2.0,
        allow_private=True,
        on_attempt=seen.append,
        sleep=waits.append,
    )
    assert not delivery.delivered
    assert [a.status_code for a in delivery.attempts] == [None, None, None]
    assert [a.error for a in delivery.attempts] == ["connection refused"] * 3
    assert waits == [0.5, 1.0]
    assert len(seen) == 3


def test_deliver_refuses_a_private_url_without_sending(receiver_factory) -> None:
    receiver = receiver_factory(lambda n: (200, {}))
    seen: list[Delivery] = []
    waits: list[float] = []
    delivery = deliver(receiver.url, "search.completed", PAYLOAD, SECRET, on_attempt=seen.append, sleep=waits.append)
    assert not delivery.delivered
    assert len(delivery.attempts) == 1
    assert delivery.attempts[0].status_code is None
    assert (delivery.attempts[0].error or "").startswith("refused: ")
    assert "loopback" in (delivery.attempts[0].error or "")
    assert waits == [] and len(seen) == 1
    assert receiver.requests == []


def test_connect_time_check_stops_dns_rebinding(receiver_factory) -> None:
    """The URL passes the check (a public literal), but the sender's own resolution now answers a
    loopback address: the connection is refused at connect time, nothing reaches the receiver."""
    receiver = receiver_factory(lambda n: (200, {}))
    port = receiver.server.server_address[1]
    post = webhooks._HttpxPost(2.0, allow_private=False, resolve=resolver_for("127.0.0.1"))
    try:
        delivery = deliver(
            f"http://93.184.215.14:{port}/hook", "search.completed", PAYLOAD, SECRET, post=post, sleep=lambda s: None
        )
    finally:
        post.close()
    assert not delivery.delivered
    assert len(delivery.attempts) == 1
    assert (delivery.attempts[0].error or "").startswith("refused: ")
    assert receiver.requests == []


def test_sender_connects_to_the_address_it_checked(receiver_factory) -> None:
    """The default sender connects to the address its resolver answered (pinning), keeping the host name."""
    receiver = receiver_factory(lambda n: (204, {}))
    port = receiver.server.server_address[1]
    post = webhooks._HttpxPost(2.0, allow_private=True, resolve=resolver_for("127.0.0.1"))
    try:
        status = post(f"http://hooks.example.com:{port}/hook", b"{}", {"Content-Type": "application/json"}, 2.0)
    finally:
        post.close()
    assert status == 204
    (request,) = receiver.wait_for(1)
    assert request.headers["Host"] == f"hooks.example.com:{port}"


# ---- the retry policy with an injected sender --------------------------------------------------


class ScriptedPost:
    """Answers each call with the next scripted status, or raises it when it is an exception."""

    def __init__(self, *script: int | BaseException) -> None:
        self.script = list(script)
        self.calls: list[tuple[str, bytes, dict[str, str], float]] = []

    def __call__(self, url: str, body: bytes, headers, timeout_s: float) -> int:
        self.calls.append((url, body, dict(headers), timeout_s))
        outcome = self.script.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


PUBLIC_URL = "https://93.184.215.14/hook"


@pytest.mark.parametrize("status", [500, 502, 503, 429, 408])
def test_retryable_statuses_are_retried(status: int) -> None:
    post = ScriptedPost(status, 201)
    delivery = deliver(PUBLIC_URL, "search.completed", PAYLOAD, SECRET, post=post, sleep=lambda s: None)
    assert delivery.delivered
    assert [a.status_code for a in delivery.attempts] == [status, 201]


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 413, 422, 301, 307])
def test_final_statuses_end_the_delivery(status: int) -> None:
    post = ScriptedPost(status, 200)
    delivery = deliver(PUBLIC_URL, "search.completed", PAYLOAD, SECRET, post=post, sleep=lambda s: None)
    assert not delivery.delivered
    assert len(delivery.attempts) == 1 and len(post.calls) == 1


def test_network_errors_are_retried_and_described() -> None:
    request = httpx.Request("POST", PUBLIC_URL)
    post = ScriptedPost(
        httpx.ReadTimeout("timed out", request=request),
        httpx.ConnectError("[Errno 111] Connection refused", request=request),
        ConnectionResetError(104, "Connection reset by peer"),
        httpx.RemoteProtocolError("Server disconnected", request=request),
        200,
    )
    waits: list[float] = []
    delivery = deliver(
        PUBLIC_URL, "search.completed", PAYLOAD, SECRET, attempts=5, first_backoff_s=2.0, post=post, sleep=waits.append
    )
    assert delivery.delivered
    errors = [a.error for a in delivery.attempts]
    assert errors[0] == "timeout"
    assert errors[1].startswith("connection error")
    assert errors[2] == "connection reset"
    assert errors[3].startswith("protocol error")
    assert errors[4] is None
    assert waits == [2.0, 4.0, 8.0, 16.0]


def test_attempts_are_exhausted() -> None:
    post = ScriptedPost(503, 503, 503)
    delivery = deliver(PUBLIC_URL, "search.completed", PAYLOAD, SECRET, attempts=3, post=post, sleep=lambda s: None)
    assert not delivery.delivered
    assert [a.error for a in delivery.attempts] == ["HTTP 503"] * 3


def test_each_attempt_is_freshly_signed_and_the_url_rechecked() -> None:
    post = ScriptedPost(500, 200)
    checks: list[str] = []
    real_check = webhooks.check_webhook_url

    def counting_check(url: str, allow_private: bool = False, resolve=socket.getaddrinfo) -> str:
        checks.append(url)
        return real_check(url, allow_private, resolve)

    mp = pytest.MonkeyPatch()
    mp.setattr(webhooks, "check_webhook_url", counting_check)
    try:
        deliver(PUBLIC_URL, "search.completed", PAYLOAD, SECRET, post=post, sleep=lambda s: None)
    finally:
        mp.undo()
    assert checks == [PUBLIC_URL, PUBLIC_URL]
    for _url, body, headers, timeout_s in post.calls:
        assert timeout_s == 10.0
        assert verify(SECRET, body, headers[TIMESTAMP_HEADER], headers[SIGNATURE_HEADER])
    assert post.calls[0][2][DELIVERY_HEADER] == post.calls[1][2][DELIVERY_HEADER]


def test_a_url_refused_at_send_time_ends_the_delivery() -> None:
    post = ScriptedPost(WebhookUrlError("host 'x' resolves to a loopback address"), 200)
    delivery = deliver(PUBLIC_URL, "search.completed", PAYLOAD, SECRET, post=post, sleep=lambda s: None)
    assert not delivery.delivered
    assert [a.error for a in delivery.attempts] == ["refused: host 'x' resolves to a loopback address"]


def test_a_refused_url_never_calls_the_sender() -> None:
    post = ScriptedPost(200)
    delivery = deliver("file:///etc/passwd", "search.completed", PAYLOAD, SECRET, post=post, sleep=lambda s: None)
    assert not delivery.delivered and post.calls == []
    assert (delivery.attempts[0].error or "").startswith("refused: ")


def test_a_failing_recorder_does_not_stop_delivery() -> None:
    def broken(_: Delivery) -> None:
        raise RuntimeError("database down")

    post = ScriptedPost(500, 200)
    delivery = deliver(
        PUBLIC_URL, "search.completed", PAYLOAD, SECRET, on_attempt=broken, post=post, sleep=lambda s: None
    )
    assert delivery.delivered and len(delivery.attempts) == 2


def test_deliver_generates_a_delivery_id_and_rejects_caller_mistakes() -> None:
    delivery = deliver(PUBLIC_URL, "search.completed", PAYLOAD, SECRET, post=ScriptedPost(200))
    assert len(delivery.delivery_id) == 32
    with pytest.raises(ValueError):
        deliver(PUBLIC_URL, "search.completed", PAYLOAD, "", post=ScriptedPost(200))
    with pytest.raises(ValueError):
        deliver(PUBLIC_URL, "search.completed", PAYLOAD, SECRET, attempts=0, post=ScriptedPost(200))
    with pytest.raises(ValueError):
        deliver(PUBLIC_URL, "bad\r\nevent", PAYLOAD, SECRET, post=ScriptedPost(200))
