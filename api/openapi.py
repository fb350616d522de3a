"""The OpenAPI 3.1 document of the HTTP API, built from api/routes.py and the models (as
infra/asyncapi.py builds the Kafka one), served at /openapi.json and committed as
docs/openapi.json; `payments openapi --check` says whether the committed one is current."""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from api.problems import CONTENT_TYPE as PROBLEM_TYPE
from api.problems import TITLES
from api.routes import GATE_ERRORS, ROUTES, Body, Param, Route
from infra.asyncapi import check_rendered
from models.http import Problem

DOCUMENT_PATH = Path("docs/openapi.json")
SCHEMAS = "#/components/schemas/"
ERROR_HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}},
    429: {
        "Retry-After": {"description": "seconds until the key may ask again", "schema": {"type": "integer"}}
    },
    503: {
        "Retry-After": {"description": "seconds to wait before asking again", "schema": {"type": "integer"}}
    },
}
DESCRIPTION = """The payment service's HTTP API. Every /v1 operation needs an API key made by the
operator (`payments api-keys create`), sent as `Authorization: Bearer <key>`, with the scope
the operation names; a key limited to accounts acts for and reads about those accounts only.
Errors are RFC 9457 problem details. Commands sent here are the same as on Kafka (see the
AsyncAPI document): a POST answers once its effect is recorded, or 202 while it is on its way."""


def build_document() -> dict[str, Any]:
    schemas = _schemas()
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Payments service HTTP API", "version": "1.1.0", "description": DESCRIPTION},
        "paths": paths,
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "securitySchemes": {
                "apiKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "a key from `payments api-keys create`",
                }
            },
        },
    }


def _schemas() -> dict[str, Any]:
    """The answers' schemas as written (serialization), the bodies' as read (validation)."""
    answers: set[type[BaseModel]] = {Problem} | {
        model for route in ROUTES for model in route.answers.values() if model is not None
    }
    _, top = models_json_schema(
        [(model, "serialization") for model in sorted(answers, key=lambda m: m.__name__)],
        ref_template=SCHEMAS + "{model}",
    )
    schemas: dict[str, Any] = dict(top.get("$defs", {}))
    for body in (route.body for route in ROUTES if route.body is not None):
        schemas[body.name] = _body_schema(body, schemas)
    return schemas


def _body_schema(body: Body, schemas: dict[str, Any]) -> dict[str, Any]:
    schema = copy.deepcopy(body.model.model_json_schema(mode="validation", ref_template=SCHEMAS + "{model}"))
    schemas.update(schema.pop("$defs", {}))
    for name in body.given_elsewhere:
        schema["properties"].pop(name, None)
    schema["required"] = [name for name in schema.get("required", []) if name not in body.given_elsewhere]
    schema["title"] = body.name
    return schema


def _operation(route: Route) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": route.operation,
        "summary": route.summary,
        "parameters": [_parameter(param) for param in route.params],
        "responses": _responses(route),
    }
    if route.open:
        operation["security"] = []
    else:
        operation["security"] = [{"apiKey": []}]
        operation["description"] = f"Needs the scope `{route.scope}`."
    if route.body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": SCHEMAS + route.body.name}}},
        }
    return operation


def _parameter(param: Param) -> dict[str, Any]:
    schema: dict[str, Any] = (
        {"type": "array", "items": dict(param.schema)} if param.many else dict(param.schema)
    )
    described: dict[str, Any] = {
        "name": param.name,
        "in": param.where,
        "required": param.required,
        "description": param.description,
        "schema": schema,
    }
    if param.many:
        described.update(style="form", explode=True)
    return described


def _responses(route: Route) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    links = {
        link.operation: {
            "operationId": link.operation,
            "parameters": {link.parameter: f"$response.body#/{link.field}"},
        }
        for link in route.links
    }
    for status, model in sorted(route.answers.items()):
        if model is None:
            responses[str(status)] = {"description": "done; no content"}
            continue
        responses[str(status)] = {
            "description": model.__doc__ or model.__name__,
            "content": {route.media_type: {"schema": {"$ref": SCHEMAS + model.__name__}}},
        }
        if links and all(link.field in model.model_fields for link in route.links):
            responses[str(status)]["links"] = links
    if not route.answers:
        schema: dict[str, Any] = (
            {"type": "string"} if route.media_type == "text/plain" else {"type": "object"}
        )
        responses["200"] = {"description": route.summary, "content": {route.media_type: {"schema": schema}}}
    errors = set(route.errors) | (set() if route.open else set(GATE_ERRORS))
    for status in sorted(errors):
        answer: dict[str, Any] = {
            "description": TITLES[status],
            "content": {PROBLEM_TYPE: {"schema": {"$ref": SCHEMAS + "Problem"}}},
        }
        if status in ERROR_HEADERS:
            answer["headers"] = ERROR_HEADERS[status]
        responses[str(status)] = answer
    return responses


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2) + "\n"


@functools.cache
def rendered() -> bytes:
    return render(build_document()).encode()


def write(path: Path = DOCUMENT_PATH) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(build_document()))


def check(path: Path = DOCUMENT_PATH) -> list[str]:
    """What differs between the committed document and a fresh build ([] when up to date)."""
    return check_rendered(path, render(build_document()), json.loads)
