"""Outgoing webhooks: signed, SSRF-safe, retried with backoff, every attempt recorded.

The policy is pure and unit-tested (`check_webhook_url`, `sign`, `verify`, `backoff_delays`,
the retry rules in `deliver`); the HTTP send sits at the edge (`_HttpxPost`) and is injectable.

SSRF: a URL is checked before every attempt (`check_webhook_url`), and the default sender checks
again at connect time: its network backend resolves the host itself, refuses the connection unless
every address is public, and connects to the checked address (TLS still verifies the host name).
So a DNS answer that changes between the check and the connect (rebinding) cannot reach a private
address. Redirects are never followed and proxies from the environment are never used.

Receivers verify a delivery with `verify(secret, raw_body, timestamp_header, signature_header)`.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import re
import socket
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Facereel-Signature"  # value "sha256=<hex>"
TIMESTAMP_HEADER = "X-Facereel-Timestamp"  # unix seconds, int as string
EVENT_HEADER = "X-Facereel-Event"  # e.g. "index_job.completed", "search.completed"
DELIVERY_HEADER = "X-Facereel-Delivery"  # the delivery id
USER_AGENT = "facereel-webhooks/1"

MAX_URL_LENGTH = 2048
RETRY_STATUSES = frozenset({408, 429})  # plus every 5xx
_ERROR_MAX_CHARS = 200

# getaddrinfo's shape: (host, port, *, type=...) -> [(family, type, proto, canonname, sockaddr), ...]
Resolve = Callable[..., Iterable[tuple[Any, ...]]]
# The HTTP edge: (url, body, headers, timeout_s) -> status code; raises on network errors.
Post = Callable[[str, bytes, Mapping[str, str], float], int]

_SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT (RFC 6598)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # well-known NAT64 prefix: the last 32 bits are IPv4
_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}")  # event names and delivery ids (header-safe)
_UNSAFE_URL_CHARS = re.compile(r"[\x00-\x20\x7f\\]")  # whitespace, controls, backslash (parser differentials)
_INT = re.compile(r"[0-9]{1,15}")


class WebhookUrlError(ValueError):
    """A URL that may not receive webhooks; the message says why and may be shown to the client."""


# ---- URL rules (pure, resolver injectable) -----------------------------------------------------


def _address_problem(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why `ip` may not receive webhooks ("loopback", "private", ...), or None when it is public."""
    if isinstance(ip, ipaddress.IPv6Address):
        # Forms that carry an IPv4 address: judge the address they carry too.
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is None and ip.teredo is not None:
            embedded = ip.teredo[1]
        if embedded is not None and (problem := _address_problem(embedded)) is not None:
            return problem
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED:
        return "shared (carrier-grade NAT)"
    if ip.is_private:
        return "private"
    if ip.is_reserved:
        return "reserved"
    if not ip.is_global:
        return "non-public"
    return None


AllowPrivate = bool | Collection[str]


def _allowed(problem: str, allow_private: AllowPrivate) -> bool:
    """``allow_private`` is True (any address), False (public only) or the kinds of address
    allowed besides public ones, as ``_address_problem`` names them (e.g. {"loopback"})."""
    if isinstance(allow_private, bool):
        return allow_private
    return problem in allow_private


def _parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])  # drop an IPv6 zone ("fe80::1%eth0")
    except ValueError:
        return None


def _checked_addresses(host: str, port: int, allow_private: AllowPrivate, resolve: Resolve) -> list[str]:
    """Every address `host` resolves to (in resolver order, deduplicated), after checking each one.

    Raises WebhookUrlError when the host does not resolve or any address is not public (unless
    allow_private): one bad answer refuses the host, whichever the connection would have used.
    """
    try:
        infos = list(resolve(host, port, type=socket.SOCK_STREAM))
    except (OSError, UnicodeError, ValueError) as exc:  # socket.gaierror is an OSError
        raise WebhookUrlError(f"host {host!r} does not resolve") from exc
    addresses: list[str] = []
    for info in infos:
        text = str(info[4][0])
        ip = _parse_ip(text)
        if ip is None:
            raise WebhookUrlError(f"host {host!r} resolves to something that is not an IP address")
        if (problem := _address_problem(ip)) is not None and not _allowed(problem, allow_private):
            raise WebhookUrlError(
                f"host {host!r} resolves to a {problem} address; webhooks go to public addresses only"
            )
        if text not in addresses:
            addresses.append(text)
    if not addresses:
        raise WebhookUrlError(f"host {host!r} does not resolve")
    return addresses


def check_webhook_url(url: str, allow_private: AllowPrivate = False, resolve: Resolve = socket.getaddrinfo) -> str:
    """Return the URL (stripped) if it may receive webhooks, else raise WebhookUrlError.

    http or https only; a host is required; no userinfo; at most 2048 characters; every address
    the host resolves to (IP literals in any form included) must be public unless allow_private.
    """
    if not isinstance(url, str):
        raise WebhookUrlError("the webhook URL must be a string")
    url = url.strip()
    if not url:
        raise WebhookUrlError("the webhook URL is empty")
    if len(url) > MAX_URL_LENGTH:
        raise WebhookUrlError(f"the webhook URL is longer than {MAX_URL_LENGTH} characters")
    if _UNSAFE_URL_CHARS.search(url):
        raise WebhookUrlError("the webhook URL contains whitespace, control characters or backslashes")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise WebhookUrlError(f"the webhook URL is not valid: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise WebhookUrlError("the webhook URL must use http or https")
    if "@" in parts.netloc:
        raise WebhookUrlError("the webhook URL must not contain credentials (user:password@)")
    host = parts.hostname
    if not host:
        raise WebhookUrlError("the webhook URL has no host")
    if port == 0:
        raise WebhookUrlError("the webhook URL has an invalid port")
    _checked_addresses(host, port or (443 if scheme == "https" else 80), allow_private, resolve)
    return url


# ---- signatures (pure) -------------------------------------------------------------------------


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """'sha256=' + hex HMAC-SHA256(secret, f"{timestamp}.".encode() + body)."""
    mac = hmac.new(secret.encode(), f"{int(timestamp)}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(
    secret: str, body: bytes, timestamp: str, signature: str, tolerance_s: float = 300, now: float | None = None
) -> bool:
    """True when `signature` signs `timestamp` + `body` with `secret` and the timestamp is fresh.

    False when the timestamp is not a plain integer or is further than tolerance_s from now (a
    replay). The signatures are compared in constant time.
    """
    if not isinstance(timestamp, str) or not isinstance(signature, str) or not _INT.fullmatch(timestamp.strip()):
        return False
    ts = int(timestamp.strip())
    current = time.time() if now is None else now
    if abs(current - ts) > tolerance_s:
        return False
    expected = sign(secret, ts, body)
    return hmac.compare_digest(expected.encode(), signature.strip().encode("utf-8", "replace"))


# ---- retry policy (pure) -----------------------------------------------------------------------


def backoff_delays(attempts: int, first_s: float, factor: float = 2.0, cap_s: float = 60.0) -> list[float]:
    """Waits before attempt 2..attempts: first_s, first_s*factor, ... each capped at cap_s."""
    if first_s < 0 or cap_s < 0 or factor <= 0:
        raise ValueError("backoff needs first_s >= 0, cap_s >= 0 and factor > 0")
    delays: list[float] = []
    delay = float(first_s)
    for _ in range(max(attempts - 1, 0)):
        delays.append(min(delay, cap_s))
        delay = min(delay * factor, cap_s)  # capped as it grows: no overflow on long runs
    return delays


def is_retryable_status(status_code: int) -> bool:
    """5xx, 429 (too many requests) and 408 (request timeout) are worth another attempt."""
    return 500 <= status_code <= 599 or status_code in RETRY_STATUSES


@dataclass
class Attempt:
    at: str  # ISO-8601 UTC time the attempt started
    status_code: int | None
    error: str | None  # None on success; else "HTTP 500", "timeout", "connection refused", "refused: <reason>"...
    duration_ms: float


@dataclass
class Delivery:
    delivery_id: str
    url: str
    event: str
    delivered: bool
    attempts: list[Attempt] = field(default_factory=list)


def _caused_by(exc: BaseException, kinds: tuple[type[BaseException], ...]) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kinds):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def describe_error(exc: BaseException) -> str:
    """A short reason for a failed send, safe to record and show (no secrets, no bodies)."""
    if _caused_by(exc, (httpx.TimeoutException, httpcore.TimeoutException, TimeoutError, socket.timeout)):
        return "timeout"
    if _caused_by(exc, (ConnectionRefusedError,)):
        return "connection refused"
    if _caused_by(exc, (socket.gaierror,)):
        return "does not resolve"
    if _caused_by(exc, (ConnectionResetError,)):
        return "connection reset"
    if isinstance(exc, httpx.ConnectError | httpcore.ConnectError):
        reason = "connection error"
    elif isinstance(exc, httpx.RemoteProtocolError | httpcore.RemoteProtocolError):
        reason = "protocol error"
    elif isinstance(exc, httpx.HTTPError | httpcore.NetworkError | OSError):
        reason = "network error"
    else:
        reason = "error"
    detail = str(exc).strip()
    text = f"{reason}: {type(exc).__name__}" + (f": {detail}" if detail else "")
    return text[:_ERROR_MAX_CHARS]


# ---- the HTTP edge -----------------------------------------------------------------------------


class _CheckedBackend(httpcore.SyncBackend):
    """Resolves the host itself, checks every address, and connects to a checked one.

    The connection goes to the address that was checked, so a DNS answer that changes after
    `check_webhook_url` (rebinding) cannot reach a private address. TLS still verifies the host
    name (httpcore wraps this stream with the URL's host as server_hostname).
    """

    def __init__(self, allow_private: AllowPrivate, resolve: Resolve = socket.getaddrinfo) -> None:
        self._allow_private = allow_private
        self._resolve = resolve

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        addresses = _checked_addresses(host, port, self._allow_private, self._resolve)
        last: Exception | None = None
        for address in addresses:
            try:
                return super().connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None  # addresses is never empty
        raise last


class _CheckedTransport(httpx.BaseTransport):
    """httpx's HTTPTransport, but over a connection pool whose network backend is `_CheckedBackend`."""

    def __init__(self, allow_private: AllowPrivate, resolve: Resolve = socket.getaddrinfo) -> None:
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=4,
            network_backend=_CheckedBackend(allow_private, resolve),
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.SyncByteStream)
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        # httpcore's exceptions pass through unmapped; describe_error knows both families.
        response = self._pool.handle_request(core_request)
        assert isinstance(response.stream, Iterable)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_CoreStream(response.stream),
            extensions=response.extensions,
        )

    def close(self) -> None:
        self._pool.close()


class _CoreStream(httpx.SyncByteStream):
    def __init__(self, stream: Iterable[bytes]) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[bytes]:
        yield from self._stream

    def close(self) -> None:
        close = getattr(self._stream, "close", None)
        if close is not None:
            close()


class _HttpxPost:
    """The default sender: one httpx.Client per delivery; the response body is never read."""

    def __init__(self, timeout_s: float, allow_private: AllowPrivate, resolve: Resolve = socket.getaddrinfo) -> None:
        self._client = httpx.Client(
            transport=_CheckedTransport(allow_private, resolve),
            follow_redirects=False,
            timeout=timeout_s,
            trust_env=False,
        )

    def __call__(self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float) -> int:
        with self._client.stream("POST", url, content=body, headers=dict(headers), timeout=timeout_s) as response:
            return response.status_code

    def close(self) -> None:
        self._client.close()


# ---- deliver -----------------------------------------------------------------------------------


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _host_of(url: str) -> str:
    """For logs: the host only (query strings may carry the receiver's tokens)."""
    try:
        return urlsplit(url).hostname or "?"
    except ValueError:
        return "?"


def deliver(
    url: str,
    event: str,
    payload: dict,
    secret: str,
    *,
    delivery_id: str | None = None,
    attempts: int = 5,
    first_backoff_s: float = 1.0,
    timeout_s: float = 10.0,
    allow_private: AllowPrivate = False,
    on_attempt: Callable[[Delivery], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    post: Post | None = None,
) -> Delivery:
    """POST the payload to `url`, signed, retrying with backoff; return every attempt.

    Success is any 2xx. Redirects are not followed (a 3xx is a failed attempt and ends the
    delivery). The URL is re-checked before every attempt; a refused URL ends the delivery at once
    without sending. Connection errors, timeouts, 5xx, 429 and 408 are retried after
    backoff_delays(attempts, first_backoff_s); other statuses end the delivery. on_attempt gets a
    snapshot of the delivery after each attempt. Never raises for network errors; raises
    ValueError for a caller's mistake (no secret, a bad event name, attempts < 1).
    """
    if not secret:
        raise ValueError("a webhook secret is required")
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    if not _TOKEN.fullmatch(event):
        raise ValueError(f"invalid webhook event name {event!r}")
    delivery_id = delivery_id or uuid.uuid4().hex
    if not _TOKEN.fullmatch(delivery_id):
        raise ValueError(f"invalid webhook delivery id {delivery_id!r}")
    delays = backoff_delays(attempts, first_backoff_s)
    body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    url = url.strip() if isinstance(url, str) else url
    delivery = Delivery(delivery_id=delivery_id, url=url, event=event, delivered=False, attempts=[])
    host = _host_of(url) if isinstance(url, str) else "?"

    own_post: _HttpxPost | None = None
    if post is None:
        own_post = _HttpxPost(timeout_s, allow_private)
        post = own_post
    try:
        for number in range(1, attempts + 1):
            if number > 1:
                sleep(delays[number - 2])
            at, started = _now_iso(), time.monotonic()
            status_code: int | None = None
            final = False
            try:
                check_webhook_url(url, allow_private=allow_private)
                timestamp = int(time.time())
                headers = {
                    "Content-Type": "application/json",
                    "User-Agent": USER_AGENT,
                    EVENT_HEADER: event,
                    DELIVERY_HEADER: delivery_id,
                    TIMESTAMP_HEADER: str(timestamp),
                    SIGNATURE_HEADER: sign(secret, timestamp, body),
                }
                status_code = post(url, body, headers, timeout_s)
            except WebhookUrlError as exc:  # before sending, or at connect time (DNS changed)
                error: str | None = f"refused: {exc}"
                final = True
            except Exception as exc:  # a network error, or a broken sender: record it, never raise
                error = describe_error(exc)
                if not isinstance(exc, httpx.HTTPError | httpcore.NetworkError | httpcore.TimeoutException | OSError):
                    logger.warning("webhook %s: unexpected send error", delivery_id, exc_info=True)
            else:
                if 200 <= status_code <= 299:
                    error = None
                    delivery.delivered = True
                elif 300 <= status_code <= 399:
                    error = f"HTTP {status_code} (redirect not followed)"
                    final = True
                else:
                    error = f"HTTP {status_code}"
                    final = not is_retryable_status(status_code)
            duration_ms = round((time.monotonic() - started) * 1000, 3)
            delivery.attempts.append(Attempt(at=at, status_code=status_code, error=error, duration_ms=duration_ms))
            logger.info(
                "webhook %s %s to %s: attempt %d/%d %s in %.0f ms",
                delivery_id,
                event,
                host,
                number,
                attempts,
                "delivered" if error is None else error,
                duration_ms,
            )
            if on_attempt is not None:
                try:
                    on_attempt(replace(delivery, attempts=list(delivery.attempts)))
                except Exception:  # recording is the caller's; a failure there must not stop delivery
                    logger.exception("webhook %s: on_attempt failed", delivery_id)
            if delivery.delivered or final:
                break
    finally:
        if own_post is not None:
            own_post.close()
    if not delivery.delivered:
        logger.warning(
            "webhook %s %s to %s not delivered after %d attempt(s): %s",
            delivery_id,
            event,
            host,
            len(delivery.attempts),
            delivery.attempts[-1].error if delivery.attempts else "no attempt",
        )
    return delivery
