"""What /openapi.json says a response looks like, checked against a real response: the
body must validate against the schema the document declares for the operation, the
status and the content type. tests/api/conftest.py runs it on every response the tests
of tests/api receive, so a read model and the bytes the app writes cannot part without
a test failing (schemathesis, tests/api/test_fuzz.py, does the same for generated
requests)."""
from __future__ import annotations

import re
from typing import Any

import jsonschema


class OpenApiCheck:
    def __init__(self, document: dict[str, Any]) -> None:
        self.components = document["components"]
        # Literal paths before templated ones: /posts/popular is not /posts/{id}.
        self.operations = sorted(
            ((method.upper(), re.compile("^" + re.sub(r"{\w+}", "[^/]+", path) + "$"), path, op)
             for path, ops in document["paths"].items() for method, op in ops.items()),
            key=lambda o: o[2].count("{"))
        self._validators: dict[tuple[str, str, str, str], jsonschema.Draft202012Validator] = {}

    def operation(self, method: str, path: str) -> tuple[str, dict[str, Any]] | None:
        """(path template, operation) of a request path, or None for a path the document
        does not describe."""
        for op_method, pattern, template, op in self.operations:
            if op_method == method.upper() and pattern.match(path):
                return template, op
        return None

    def problems(self, method: str, path: str, status: int, content_type: str, body: Any) -> list[str]:
        """What is wrong with the response by the document; [] when it conforms, or when
        the document says nothing of this path or status (status codes are the fuzz
        test's business)."""
        found = self.operation(method, path)
        if found is None:
            return []
        template, op = found
        declared = op["responses"].get(str(status))
        if declared is None or "content" not in declared:
            return []
        media_type = content_type.split(";")[0].strip()
        content = declared["content"].get(media_type)
        if content is None:
            return [f"{method} {template} {status}: content type {media_type!r}, the document declares "
                    f"{sorted(declared['content'])}"]
        key = (method.upper(), template, str(status), media_type)
        validator = self._validators.get(key)
        if validator is None:
            validator = self._validators[key] = jsonschema.Draft202012Validator(
                {**content["schema"], "components": self.components})
        return [f"{method} {template} {status}: {'/'.join(map(str, e.absolute_path)) or 'body'}: {e.message[:300]}"
                for e in validator.iter_errors(body)]
