"""OpenAPI 3.1, generated from the endpoint declarations: request models (api/models)
and the read models responses are written with (server/read_models).

A pure function of the endpoints it is given: ``api.routes`` declares them once and
serves the document it builds from them.
"""
from __future__ import annotations

import re
from typing import Any, Sequence

from pydantic import TypeAdapter

from api.http import Endpoint, response_adapter
from api.models.common import Problem

_STATUS_TEXT = {
    200: "OK", 201: "Created", 202: "Accepted", 204: "No Content", 400: "Bad Request", 401: "Unauthorized",
    403: "Forbidden", 404: "Not Found", 409: "Conflict", 413: "Payload Too Large",
    415: "Unsupported Media Type", 429: "Too Many Requests", 503: "Service Unavailable",
}


def _ref(model: type) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def build_openapi(endpoints: Sequence[Endpoint]) -> dict[str, Any]:
    """The document describing ``endpoints``."""
    # Request bodies as they are validated; responses from the adapters that write them.
    adapters: dict[tuple[Any, str], TypeAdapter] = {(Problem, "serialization"): TypeAdapter(Problem)}
    for ep in endpoints:
        if ep.response is not None:
            adapters[(ep.response, "serialization")] = response_adapter(ep.response)
        if ep.body is not None:
            adapters[(ep.body, "validation")] = TypeAdapter(ep.body)
    keyed, schemas = TypeAdapter.json_schemas(
        [(shape, mode, adapter) for (shape, mode), adapter in sorted(adapters.items(), key=lambda kv: repr(kv[0]))],
        ref_template="#/components/schemas/{model}",
    )
    paths: dict[str, dict[str, Any]] = {}
    for ep in endpoints:
        path = ep.path
        params = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                  for p in re.findall(r"{(\w+)}", path)]
        if ep.query is not None:
            for fname, finfo in ep.query.model_fields.items():
                name = finfo.alias or fname  # e.g. `from`, a Python keyword
                schema = ep.query.model_json_schema()["properties"].get(name, {})
                params.append({"name": name, "in": "query", "required": finfo.is_required(), "schema": schema})
        op: dict[str, Any] = {
            "operationId": ep.name,
            "summary": ep.summary,
            "tags": [ep.tag],
            "parameters": params,
            "responses": {},
        }
        if ep.auth:
            op["security"] = [{"bearer": []}]
        if ep.body is not None:
            op["requestBody"] = {"required": True,
                                 "content": {"application/json": {"schema": _ref(ep.body)}}}
        success: dict[str, Any] = {"description": _STATUS_TEXT.get(ep.status, "Success")}
        if ep.response is not None:
            success["content"] = {"application/json": {"schema": keyed[(ep.response, "serialization")]}}
        for code in (ep.status, *ep.also):
            op["responses"][str(code)] = {**success, "description": _STATUS_TEXT.get(code, "Success")}
        for code in sorted(set(ep.errors) | ({401} if ep.auth else set())):
            op["responses"][str(code)] = {
                "description": _STATUS_TEXT.get(code, "Error"),
                "content": {"application/problem+json": {"schema": _ref(Problem)}},
            }
        paths.setdefault(path, {})[ep.method.lower()] = op
    document = {
        "openapi": "3.1.0",
        "info": {"title": "Pulse API", "version": "1.0.0",
                 "description": "REST API of Pulse. Real-time events use Socket.IO at /socket.io."},
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": schemas.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
    return document
