"""What the problem middleware logs: nothing with a traceback for a client's error, one
line naming the request id for a server error; every response names its request."""
from __future__ import annotations

import asyncio
import logging
import uuid

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from api.middleware import problem_middleware, send_request_id
from tests.helpers.api import is_problem
from tests.helpers.app import own_namespaces
from tests.helpers.stores import SecantusServer

pytestmark = pytest.mark.asyncio(loop_scope="session")

# Where a request's own errors are logged: the middleware, and aiohttp's protocol.
REQUEST_LOGGERS = ("pulse.api", "aiohttp")


def from_requests(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith(REQUEST_LOGGERS)]


def assert_names_its_request(status, body, resp) -> str:
    """The header always; a server error's problem document too."""
    rid = resp.headers["X-Request-Id"]
    assert rid and (body["request_id"] == rid if status >= 500 else "request_id" not in body), (resp.headers, body)
    return rid


async def raw_http(url: str, data: bytes) -> bytes:
    """Sends bytes that are not valid HTTP; returns what the server answered."""
    host, port = url.split("//", 1)[1].split("/", 1)[0].split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(data)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return answer


async def test_client_errors_log_no_traceback_and_name_their_request(api, caplog):
    a = await api.register("lg")
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="pulse.api"):
        answers = [
            await api.request("POST", "/posts", token=a.token, data=b"{nope",
                              headers={"Content-Type": "application/json"}),
            await api.request("GET", f"/users/{a.id}/posts?cursor=not-ours", token=a.token),
            await api.request("GET", "/posts/00000000-0000-0000-0000-000000000000", token=a.token),
            await api.request("GET", "/nowhere", token=a.token),
            await api.request("GET", "/users/me"),
        ]
        ids = set()
        for (status, body, resp), expected in zip(answers, (400, 400, 404, 404, 401)):
            is_problem(status, body, resp, expected)
            ids.add(assert_names_its_request(status, body, resp))
        assert len(ids) == len(answers)  # one id per request
        # Not HTTP at all: aiohttp's parser answers 400, which is not ours to log either.
        assert b" 400 " in (await raw_http(api.base_url, b"GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n")).split(b"\r\n")[0]
    records = from_requests(caplog)
    assert not [r for r in records if r.exc_info or r.levelno >= logging.ERROR], [r.getMessage() for r in records]
    assert "Traceback" not in caplog.text


async def test_a_successful_response_names_its_request_too_and_a_plain_given_id_is_kept(api):
    a = await api.register("lgs")
    status, _, resp = await api.request("GET", "/users/me", token=a.token, headers={"X-Request-Id": "abc-123.x"})
    assert status == 200 and resp.headers["X-Request-Id"] == "abc-123.x"
    for hostile in ("a" * 65, "two words", "evil\u2028line"):
        status, _, resp = await api.request("GET", "/users/me", token=a.token, headers={"X-Request-Id": hostile})
        assert status == 200 and resp.headers["X-Request-Id"] not in ("", hostile)


async def test_a_stopped_store_logs_one_error_line_with_the_request_id(make_amqp_vhost, start_app, caplog):
    mongo = SecantusServer().start()
    try:
        async with start_app(**own_namespaces(make_amqp_vhost, "logmongo"), mongo_url=mongo.url,
                             mongo_timeout_ms=500) as api:
            a = await api.register("lgm")
            mongo.stop()
            caplog.clear()
            status, body, resp = await asyncio.wait_for(api.request("GET", "/conversations", token=a.token), 10)
            assert status == 503, body
            rid = assert_names_its_request(status, body, resp)
            mine = [r for r in caplog.records if rid in r.getMessage()]
            assert len(mine) == 1, [r.getMessage() for r in caplog.records]
            (line,) = mine
            assert line.levelno == logging.ERROR and line.exc_info is None
            assert "\n" not in line.getMessage() and "503" in line.getMessage() and "mongo" in line.getMessage()
    finally:
        mongo.stop()


async def test_an_unhandled_error_is_one_line_with_the_request_id_and_where_it_was_raised(caplog):
    async def broken(request):
        raise RuntimeError("boom\nwith a second line")

    app = web.Application(middlewares=[problem_middleware])
    app.on_response_prepare.append(send_request_id)
    app.router.add_get("/broken", broken)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        caplog.clear()
        async with aiohttp.ClientSession() as session:
            async with session.get(server.make_url("/broken")) as resp:
                body = await resp.json(content_type=None)
                status = resp.status
        assert status == 500 and "boom" not in str(body)  # nothing internal leaks out
        rid = assert_names_its_request(status, body, resp)
        mine = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(mine) == 1, [r.getMessage() for r in caplog.records]
        message = mine[0].getMessage()
        assert rid in message and mine[0].exc_info is None and "\n" not in message
        assert "RuntimeError: boom" in message and "broken" in message  # the handler that raised
    finally:
        await server.close()
