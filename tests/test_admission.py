"""Admission control (app/http/admission.py) on a real Starlette app, in process: the request
over the limit gets an enveloped 503 with Retry-After at once, while admitted ones finish."""

from __future__ import annotations

import asyncio

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from app.http.admission import Admission, admission_class


def gated_app(
    gate: asyncio.Event, entered: asyncio.Queue, reads: int, writes: int, reads_while_writing: int | None = None
) -> Starlette:
    async def slow(request: Request) -> JSONResponse:
        await entered.put(request.method)
        await gate.wait()
        return JSONResponse({"ok": True})

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[Route("/work", slow, methods=["GET", "POST"]), Route("/healthz", health)],
        middleware=[Middleware(Admission, reads, writes, 2.5, reads_while_writing)],
    )


def test_admission_classes():
    assert admission_class("GET", "/api/v1/ext/1/event/1") == "read"
    assert admission_class("HEAD", "/media/1/1/clips/x/y.mp4") == "read"
    assert admission_class("POST", "/api/v1/ext/1/event/1/face-search") == "write"
    assert admission_class("DELETE", "/api/v1/ext/1/event/1/video-clipping/x") == "write"
    assert admission_class("GET", "/healthz") is None and admission_class("GET", "/metrics") is None
    rid = "8d1f4c4e-0f3a-4a52-9a43-3c2d1f1e2b7a"
    assert admission_class("GET", f"/api/v1/ext/1/event/1/video-clipping/{rid}") == "poll"
    assert admission_class("GET", "/api/v1/ext/1/event/1/index-jobs/abc") == "poll"
    assert admission_class("GET", f"/api/v1/ext/1/event/1/video-clipping/{rid}/clips") == "read"
    assert admission_class("GET", f"/api/v1/ext/1/event/1/face-search/{rid}") == "read"
    assert admission_class("DELETE", f"/api/v1/ext/1/event/1/video-clipping/{rid}") == "write"


def test_polls_have_a_bound_of_their_own():
    """Pollers of a record are not shed by the read bound, nor do they use it up; without a
    bound of their own they count as reads."""
    poll = "/api/v1/ext/1/event/1/video-clipping/r1"

    async def scenario(max_polls: int | None) -> tuple[list[int], int, int]:
        gate, entered = asyncio.Event(), asyncio.Queue()

        async def slow(request: Request) -> JSONResponse:
            await entered.put(request.url.path)
            await gate.wait()
            return JSONResponse({"ok": True})

        app = Starlette(
            routes=[Route("/work", slow), Route("/api/v1/ext/{o}/event/{e}/video-clipping/{r}", slow)],
            middleware=[Middleware(Admission, 1, 1, 2.5, None, max_polls=max_polls)],
        )
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            held = [asyncio.create_task(client.get("/work"))]
            await asyncio.wait_for(entered.get(), 10)
            polls = [asyncio.create_task(client.get(poll)) for _ in range(3)]
            admitted = 0
            while admitted < 3:  # until every poll is inside, or one was answered at once
                getter = asyncio.create_task(entered.get())
                done, _ = await asyncio.wait([getter, *polls], timeout=10, return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    break
                admitted += 1
            read_over = (await client.get("/work")).status_code
            gate.set()
            statuses = [r.status_code for r in await asyncio.gather(*polls, *held)]
            return statuses, admitted, read_over

    statuses, admitted, read_over = asyncio.run(scenario(max_polls=3))
    assert statuses == [200, 200, 200, 200] and admitted == 3 and read_over == 503
    statuses, admitted, _ = asyncio.run(scenario(max_polls=None))
    assert statuses[:3] == [503, 503, 503] and admitted == 0


def test_requests_over_the_limit_are_shed_with_retry_after():
    async def scenario() -> None:
        gate, entered = asyncio.Event(), asyncio.Queue()
        app = gated_app(gate, entered, reads=2, writes=1)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            held = [asyncio.create_task(client.get("/work")) for _ in range(2)]
            held.append(asyncio.create_task(client.post("/work")))
            for _ in range(3):  # all three admitted and inside the handler
                await asyncio.wait_for(entered.get(), 10)
            extra_get, extra_post = await client.get("/work"), await client.post("/work")
            health = await client.get("/healthz")
            for shed in (extra_get, extra_post):
                assert shed.status_code == 503
                assert shed.headers["retry-after"] == "3"
                body = shed.json()
                assert body["responseType"] == "error" and body["data"]["code"] == "overloaded"
            assert health.status_code == 200  # never shed
            gate.set()
            assert [r.status_code for r in await asyncio.gather(*held)] == [200, 200, 200]
            # The slots were given back: the next requests are admitted.
            again = await asyncio.gather(client.get("/work"), client.get("/work"), client.post("/work"))
            assert [r.status_code for r in again] == [200, 200, 200]

    asyncio.run(scenario())


def test_while_a_write_is_in_progress_fewer_reads_are_admitted():
    """Writes first: a search's chain of calls is not queued behind a full house of readers."""

    async def scenario() -> None:
        gate, entered = asyncio.Event(), asyncio.Queue()
        app = gated_app(gate, entered, reads=3, writes=1, reads_while_writing=1)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            held = [asyncio.create_task(client.post("/work")), asyncio.create_task(client.get("/work"))]
            for _ in range(2):
                await asyncio.wait_for(entered.get(), 10)
            shed = await client.get("/work")  # 1 read in progress: the limit while writing
            assert shed.status_code == 503 and "1 reads in progress" in shed.json()["message"]
            gate.set()
            assert [r.status_code for r in await asyncio.gather(*held)] == [200, 200]
            gate.clear()
            reads = [asyncio.create_task(client.get("/work")) for _ in range(3)]  # no write: all three
            for _ in range(3):
                await asyncio.wait_for(entered.get(), 10)
            gate.set()
            assert [r.status_code for r in await asyncio.gather(*reads)] == [200, 200, 200]

    asyncio.run(scenario())


def test_writes_blocking_calls_do_not_queue_behind_reads():
    """app/obs/io_threads.py: with every read thread busy, a write's ``asyncio.to_thread`` call
    still runs at once, on a write thread; calls outside a request use the read threads."""
    import threading

    from app.obs.io_threads import IoThreads

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(IoThreads(read_threads=2, write_threads=1))
        release = threading.Event()
        entered: list[str] = []

        def blocking() -> str:
            entered.append(threading.current_thread().name)
            release.wait(30)
            return threading.current_thread().name

        def quick() -> str:
            return threading.current_thread().name

        async def work(request: Request) -> JSONResponse:
            name = await asyncio.to_thread(blocking if request.method == "GET" else quick)
            return JSONResponse({"thread": name})

        app = Starlette(
            routes=[Route("/work", work, methods=["GET", "POST"])],
            middleware=[Middleware(Admission, 10, 10, 1.0)],
        )
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            reads = [asyncio.create_task(client.get("/work")) for _ in range(3)]  # 2 threads: one queued
            while len(entered) < 2:
                await asyncio.sleep(0.01)
            write = await asyncio.wait_for(client.post("/work"), 10)  # not behind the queued read
            assert write.json()["thread"].startswith("facereel-io-write")
            release.set()
            names = [r.json()["thread"] for r in await asyncio.gather(*reads)]
            assert all(n.startswith("facereel-io_") for n in names), names
            assert (await asyncio.to_thread(quick)).startswith("facereel-io_")  # outside a request: reads

    asyncio.run(scenario())


def test_the_in_flight_gauge_is_set_a_few_times_a_second_and_ends_at_the_last_value():
    """Ray's Gauge.set is costly on a hot path: under a stream of requests the gauge is set at
    most once per ``GAUGE_EVERY_S`` per class (plus the set that closes an interval), and
    the value it is left at is the real one: 1 while a request is held, 0 once all ended."""
    from app.http.admission import GAUGE_EVERY_S

    sets: list[tuple[str, int, str]] = []

    async def ok(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    async def scenario() -> float:
        gate, entered = asyncio.Event(), asyncio.Queue()

        async def held(request: Request) -> JSONResponse:
            await entered.put(1)
            await gate.wait()
            return JSONResponse({"ok": True})

        app = Starlette(
            routes=[Route("/work", ok), Route("/held", held)],
            middleware=[Middleware(Admission, 100, 100, 2.5, None, gauge=lambda *a: sets.append(a))],
        )
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            start = asyncio.get_running_loop().time()
            for _ in range(20):
                assert [r.status_code for r in await asyncio.gather(*(client.get("/work") for _ in range(10)))] == [
                    200
                ] * 10
            elapsed = asyncio.get_running_loop().time() - start
            waiting = asyncio.create_task(client.get("/held"))
            await asyncio.wait_for(entered.get(), 10)
            await until(lambda: sets and sets[-1][1] == 1, GAUGE_EVERY_S * 20)
            gate.set()
            assert (await waiting).status_code == 200
            await until(lambda: sets[-1][1] == 0, GAUGE_EVERY_S * 20)
            return elapsed

    elapsed = asyncio.run(scenario())
    assert {(kind, layer) for kind, _, layer in sets} == {("read", "ingress")}
    intervals = elapsed / GAUGE_EVERY_S + 1
    assert len(sets) <= 2 * intervals + 6, (len(sets), elapsed)  # 400 request starts and ends
    assert sets[-1][1] == 0


async def until(predicate, deadline_s: float) -> None:
    end = asyncio.get_running_loop().time() + deadline_s
    while not predicate():
        assert asyncio.get_running_loop().time() < end, "the gauge did not reach the value"
        await asyncio.sleep(0.01)
