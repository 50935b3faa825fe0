"""OpenAPI 3.1, generated from the endpoint declarations and their pydantic models."""
from __future__ import annotations

import functools
import re
from typing import Any, get_args, get_origin

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from api.models.common import Problem
from api.routes import all_endpoints

_STATUS_TEXT = {
    200: "OK", 201: "Created", 202: "Accepted", 204: "No Content", 400: "Bad Request", 401: "Unauthorized",
    403: "Forbidden", 404: "Not Found", 409: "Conflict", 413: "Payload Too Large",
    415: "Unsupported Media Type", 429: "Too Many Requests", 503: "Service Unavailable",
}


def _models_of(response: Any) -> list[type[BaseModel]]:
    if isinstance(response, type) and issubclass(response, BaseModel):
        return [response]
    if get_origin(response) is list:
        return _models_of(get_args(response)[0])
    return []


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


@functools.cache
def build_openapi() -> dict[str, Any]:
    """The document; the declarations are fixed at import, so it is built once a process."""
    endpoints = all_endpoints()
    models: set[type[BaseModel]] = {Problem}
    for ep in endpoints:
        for m in (ep.body, *(_models_of(ep.response))):
            if m is not None:
                models.add(m)
    _, schemas = models_json_schema(
        [(m, "validation" if any(ep.body is m for ep in endpoints) else "serialization") for m in
         sorted(models, key=lambda m: m.__name__)],
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
            inner = _models_of(ep.response)
            schema = _ref(inner[0]) if get_origin(ep.response) is not list else {
                "type": "array", "items": _ref(inner[0])}
            success["content"] = {"application/json": {"schema": schema}}
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
