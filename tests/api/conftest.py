"""Every response a test of tests/api receives is checked against the app's own
/openapi.json (tests/helpers/openapi_check.py): a body the document does not describe fails
the test that got it."""
from __future__ import annotations

from typing import Any

import pytest
from yarl import URL

from tests.helpers.api import Api
from tests.helpers.openapi_check import OpenApiCheck


@pytest.fixture(scope="package", autouse=True)
def responses_match_the_openapi_document():
    original = Api.request
    check: list[OpenApiCheck] = []  # the document, fetched by the first request

    async def request(self: Api, method: str, path: str, **kwargs: Any):
        status, body, resp = await original(self, method, path, **kwargs)
        if not check:
            doc_status, document, _ = await original(self, "GET", "/openapi.json")
            assert doc_status == 200, document
            check.append(OpenApiCheck(document))
        problems = check[0].problems(method, URL(self.url(path)).path, status,
                                     resp.headers.get("Content-Type", ""), body)
        assert not problems, "the response is not what /openapi.json declares:\n" + "\n".join(problems)
        return status, body, resp

    Api.request = request
    try:
        yield
    finally:
        Api.request = original
