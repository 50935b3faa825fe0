"""The open-loop client against a real aiohttp server: framing of real responses, the
timetable (every due request sent and answered once), closed-loop mode, errors."""
from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from loadtest import openloop
from storage.embedded.processes import free_port

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def _stream(request):
    # Transfer-Encoding: chunked, in several chunks.
    response = web.StreamResponse()
    await response.prepare(request)
    for part in (b'{"a": ', b'"chunked"', b"}"):
        await response.write(part)
    await response.write_eof()
    return response


async def _json(request):
    return web.json_response({"ok": True})


async def _empty(request):
    return web.Response(status=204)


async def _echo(request):
    body = await request.read()
    return web.Response(body=body, status=201, content_type="application/json")


@pytest.fixture(scope="module")
async def base_url():
    app = web.Application()
    app.router.add_get("/json", _json)
    app.router.add_get("/stream", _stream)
    app.router.add_get("/empty", _empty)
    app.router.add_post("/echo", _echo)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def _raw(url: str, request: openloop.Request, answers: int = 1) -> bytes:
    """What the server really sends back for ``answers`` requests on one connection."""
    reader, writer = await asyncio.open_connection(request.host, request.port)
    data = b""
    parser = openloop.ResponseParser()
    try:
        for _ in range(answers):
            writer.write(request.data)
            done = []
            while not done:
                chunk = await reader.read(65536)
                assert chunk, "server closed"
                data += chunk
                done = parser.feed(chunk)
    finally:
        writer.close()
    return data


@pytest.mark.parametrize("path,status", [("/json", 200), ("/stream", 200), ("/empty", 204)])
async def test_parser_frames_real_responses(base_url, path, status):
    request = openloop.Request.build(base_url + path)
    raw = await _raw(base_url, request, answers=2)
    # Fed at once, and byte by byte: the same two answers, nothing left over.
    for pieces in ([raw], [raw[i:i + 1] for i in range(len(raw))]):
        parser = openloop.ResponseParser()
        statuses = [s for piece in pieces for s in parser.feed(piece)]
        assert statuses == [status, status]
        assert parser.buffer == b""


async def test_request_is_encoded_once_with_headers_and_body(base_url):
    request = openloop.Request.build(base_url + "/echo?x=1", "POST", {"Authorization": "Bearer t"},
                                     b'{"body": "x"}')
    head, _, body = request.data.partition(b"\r\n\r\n")
    assert head.startswith(b"POST /echo?x=1 HTTP/1.1\r\n")
    assert b"\r\nAuthorization: Bearer t" in head and b"\r\nContent-Length: 13" in head
    assert body == b'{"body": "x"}'
    raw = await _raw(base_url, request)
    assert raw.startswith(b"HTTP/1.1 201") and raw.endswith(b'{"body": "x"}')


async def test_open_loop_sends_every_due_request_once(base_url):
    requests = [openloop.Request.build(base_url + "/json"), openloop.Request.build(base_url + "/stream")]
    tally = await openloop.open_loop(requests, rate=200, seconds=0.5, connections=4)
    assert tally.offered == 100
    assert tally.statuses == {200: 100} and tally.errors == {}
    assert len(tally.latencies_ms) == 100 and all(x >= 0 for x in tally.latencies_ms)
    assert len(tally.dispatch_lag_ms) == 100
    assert 0.5 <= tally.seconds < 5 and tally.cpu_seconds > 0


async def test_closed_loop_keeps_every_connection_busy(base_url):
    tally = await openloop.closed_loop([openloop.Request.build(base_url + "/json")], seconds=0.3,
                                       connections=3)
    assert tally.errors == {}
    assert tally.statuses[200] == len(tally.latencies_ms) == tally.offered
    assert tally.offered > 3  # each connection went round more than once


async def test_a_closed_port_counts_connect_errors_and_unsent_requests():
    request = openloop.Request.build(f"http://127.0.0.1:{free_port()}/json")
    tally = await openloop.open_loop([request], rate=100, seconds=0.1, connections=2, timeout=0.5)
    assert tally.errors["connect"] == 2
    assert tally.errors["unsent"] == 10  # due, but no connection ever took them
    assert tally.statuses == {}


async def test_processes_split_the_rate_and_merge(base_url):
    # Spawned client processes; the server keeps serving on this loop meanwhile.
    tally = await asyncio.to_thread(openloop.run, [openloop.Request.build(base_url + "/json")],
                                    mode="open", rate=100, seconds=0.5, connections=4, processes=2)
    assert tally.offered == 50 and tally.statuses == {200: 50}
    assert tally.errors == {} and tally.cpu_seconds > 0
