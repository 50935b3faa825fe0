"""/openapi.json and the response bytes come from the same read models (api.http,
server/read_models): the serialiser writes only what the document declares, and the
check every response of tests/api goes through (tests/api/conftest.py) refuses a body
the document does not describe."""
from __future__ import annotations

import orjson
import pytest

from api.http import response_adapter
from server.read_models.posts import Post
from tests.helpers.openapi_check import OpenApiCheck

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_the_check_refuses_a_body_the_document_does_not_describe(api):
    acct = await api.register("oac")
    status, post, _ = await api.request("POST", "/posts", token=acct.token, json={"body": "described"})
    assert status == 201
    _, document, _ = await api.request("GET", "/openapi.json")
    check = OpenApiCheck(document)
    path = f"/api/v1/posts/{post['id']}"
    assert check.problems("GET", path, 200, "application/json; charset=utf-8", post) == []
    without = {k: v for k, v in post.items() if k != "liked_by_me"}
    assert check.problems("GET", path, 200, "application/json", without)
    assert check.problems("GET", path, 200, "application/json", {**post, "like_count": "0"})
    assert check.problems("GET", path, 200, "application/json", {**post, "author": {"id": acct.id}})
    assert check.problems("GET", path, 200, "text/plain", post)
    # A problem document is checked against Problem, and /posts/popular is not /posts/{id}.
    assert check.problems("GET", path, 404, "application/problem+json", {"title": "Not Found"})
    assert check.operation("GET", "/api/v1/posts/popular")[0] == "/api/v1/posts/popular"


async def test_a_read_model_writes_exactly_the_fields_the_document_declares(api):
    acct = await api.register("oaf")
    _, post, _ = await api.request("POST", "/posts", token=acct.token, json={"body": "fields"})
    written = orjson.loads(response_adapter(Post).dump_json({**post, "author_email": "leak@example.com"}))
    assert written == post  # a key the read model does not declare is never written
    _, document, _ = await api.request("GET", "/openapi.json")
    declared = document["components"]["schemas"]["Post"]
    assert set(declared["properties"]) == set(Post.__annotations__) == set(written)
    assert set(declared["required"]) == set(Post.__required_keys__)
