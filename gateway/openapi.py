"""The OpenAPI 3.1 document, built from the registered operations."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from gateway.http import Api

PROBLEM = {
    "type": "object",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "field": {"type": "string"},
    },
}


PROBLEM_REF = "#/components/schemas/Problem"


def openapi_document(apis: Iterable[Api], version: str, public_url: str) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for op in (op for api in apis for op in api.operations):
        responses: dict[str, Any] = {}
        for status, description in sorted(op.responses.items()):
            content_type = "application/json" if status < 400 else "application/problem+json"
            schema = (
                {"type": "object"} if status < 400 else {"$ref": "#/components/schemas/Problem"}
            )
            responses[str(status)] = {
                "description": description,
                "content": {content_type: {"schema": schema}},
            }
        operation: dict[str, Any] = {
            "summary": op.summary,
            "operationId": op.handler.__name__,
            "tags": [op.tag],
            "parameters": op.params,
            "responses": responses,
        }
        if op.role is not None:
            operation["security"] = [{"bearer": []}]
            operation["x-required-role"] = op.role.value
        if op.body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": op.body}},
            }
        paths.setdefault(op.path, {})[op.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "helpline API", "version": version},
        "servers": [{"url": public_url.rstrip("/")}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Problem": PROBLEM},
        },
    }
