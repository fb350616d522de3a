"""The service's Kafka contract as an AsyncAPI 3.0 document, generated from the pydantic models.

The document (docs/asyncapi.yaml) and the schema baseline (docs/schemas/v1/*.json) are
committed: the unit tests fail when the models change and the document was not
regenerated, or when a published event changes in a way that is not additive.

Two notions of "required" meet here, on purpose: the service always writes every field of
an event, but a field is `required` in these schemas only when the model has no default.
That is the notion compatibility needs: a consumer built on the new model must still read
the events already in the topic, which lack any field added since.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from copy import deepcopy
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from infra import topics
from models import commands
from models.codec import CLOUDEVENTS_SOURCE
from models.events import EVENTS_BY_TYPE

DOCUMENT_PATH = Path("docs/asyncapi.yaml")
BASELINE_DIR = Path("docs/schemas/v1")
KAFKA_BINDING_VERSION = "0.5.0"
SCHEMAS = "#/components/schemas/"

# The Kafka key of each published event: the fields `Event.key` reads, in order (see CONTRACT.md).
EVENT_KEYS: dict[str, tuple[str, ...]] = {
    "AccountOpened": ("account_id",),
    "AccountFunded": ("account_id",),
    "PaymentInitiated": ("payment_id",),
    "PaymentAuthorized": ("payment_id",),
    "PaymentCaptured": ("payment_id",),
    "PaymentFailed": ("payment_id",),
    "PaymentRefunded": ("payment_id",),
    "RefundFailed": ("payment_id",),
    "CommandRejected": ("idempotency_key", "account_id"),
}
# Inbound topics: (topic, the field upstream keys its messages by, the commands it carries).
INBOUND: tuple[tuple[str, str, tuple[type[commands.Command], ...]], ...] = (
    (topics.ACCOUNT_COMMANDS, "account_id", tuple(commands.ACCOUNT_COMMANDS.values())),
    (topics.PAYMENT_COMMANDS, "idempotency_key", tuple(commands.PAYMENT_COMMANDS.values())),
)

# Mirrors models.codec.event_headers (a unit test holds the two together). Header values are bytes.
CLOUDEVENTS_HEADERS: dict[str, Any] = {
    "type": "object",
    "description": "CloudEvents 1.0 binary-mode headers plus the correlation id (UTF-8 values).",
    "properties": {
        "ce_specversion": {"type": "string", "const": "1.0"},
        "ce_id": {"type": "string", "format": "uuid", "description": "The event_id."},
        "ce_source": {"type": "string", "const": CLOUDEVENTS_SOURCE},
        "ce_type": {
            "type": "string",
            "pattern": r"^fintech\.[A-Za-z]+\.v[0-9]+$",
            "description": "fintech.<event_type>.v<schema_version>",
        },
        "ce_time": {"type": "string", "format": "date-time", "description": "occurred_at, in UTC (Z)."},
        "content-type": {"type": "string", "const": "application/json"},
        "correlation_id": {"type": "string", "description": "The event's Kafka key."},
    },
    "required": [
        "ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time", "content-type", "correlation_id",
    ],
}
# Mirrors agents.shell's dead_letter headers.
DEAD_LETTER_HEADERS: dict[str, Any] = {
    "type": "object",
    "description": "Why the message could not be read, and where it came from (UTF-8 values).",
    "properties": {
        "error": {"type": "string", "description": "Human-readable reason (at most 4096 bytes)."},
        "error_code": {"type": "string", "description": "Machine-readable reason."},
        "source_topic": {"type": "string"},
        "source_partition": {"type": "string", "pattern": "^[0-9]+$"},
        "source_offset": {"type": "string", "pattern": "^[0-9]+$"},
    },
    "required": ["error", "error_code", "source_topic", "source_partition", "source_offset"],
}


# --- the document -------------------------------------------------------------------------------


def build_document() -> dict[str, Any]:
    """The AsyncAPI 3.0 document; a pure function of the models, so it is byte-for-byte stable."""
    payloads, schemas = _payload_schemas()
    messages: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}

    def add(action: str, topic: str, description: str, named: dict[str, dict[str, Any]]) -> None:
        messages.update(named)
        channels[topic] = _channel(topic, description, sorted(named))
        operations[f"{action}.{topic}"] = _operation(action, topic, sorted(named))

    for topic, key_field, models in INBOUND:
        named = {m.__name__: _command_message(m, payloads[m], key_field) for m in models}
        add("receive", topic, f"Commands from upstream, keyed by {key_field}.", named)
    for event_type, event in EVENTS_BY_TYPE.items():
        named = {event_type: _event_message(event_type, payloads[event])}
        add("send", event.topic, f"{event_type} events, keyed by {_key_text(event_type)}.", named)
    add("send", topics.DEAD_LETTER, "Inbound messages that could not be read at all.",
        {"DeadLetter": _dead_letter_message()})

    # Copies: a caller editing the document must not edit the module's constants.
    schemas |= deepcopy({"CloudEventsHeaders": CLOUDEVENTS_HEADERS, "DeadLetterHeaders": DEAD_LETTER_HEADERS})
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "payments-service",
            "version": "1",
            "description": "Kafka topics the payments service reads and writes (see CONTRACT.md). "
            "Generated by `payments asyncapi` from the pydantic models: do not edit by hand.",
        },
        "defaultContentType": "application/json",
        "servers": {
            "kafka": {
                "host": "localhost:9092",
                "protocol": "kafka",
                "description": "Placeholder: the cluster named by PAYMENTS_KAFKA_BOOTSTRAP.",
            }
        },
        "channels": _sorted(channels),
        "operations": _sorted(operations),
        "components": {"messages": _sorted(messages), "schemas": _sorted(schemas)},
    }


def _payload_schemas() -> tuple[dict[type[BaseModel], dict[str, Any]], dict[str, Any]]:
    """Each model's payload `$ref`, and the shared component schemas they point to.

    Events are described as they are written (serialization), commands as they are read
    (validation). One pydantic call for all of them keeps shared names (FieldError...) unique.
    """
    pairs: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        (event, "serialization") for event in EVENTS_BY_TYPE.values()
    ]
    pairs += [(command, "validation") for _, _, models in INBOUND for command in models]
    refs, top = models_json_schema(pairs, ref_template=SCHEMAS + "{model}")
    schemas = top.get("$defs", {})
    for _, _, models in INBOUND:
        for command in models:
            # `type` has a default in the model, but the codec routes on it: without it the
            # message goes to the dead-letter topic, so upstream must always send it.
            schema = schemas[refs[(command, "validation")]["$ref"].removeprefix(SCHEMAS)]
            schema["required"] = ["type", *[f for f in schema.get("required", []) if f != "type"]]
    return {model: ref for (model, _), ref in refs.items()}, schemas


def _channel(topic: str, description: str, message_names: list[str]) -> dict[str, Any]:
    return {
        "address": topic,
        "description": description,
        "messages": {name: {"$ref": f"#/components/messages/{name}"} for name in message_names},
        "bindings": {"kafka": {"topic": topic, "bindingVersion": KAFKA_BINDING_VERSION}},
    }


def _operation(action: str, topic: str, message_names: list[str]) -> dict[str, Any]:
    return {
        "action": action,
        "channel": {"$ref": f"#/channels/{topic}"},
        "messages": [{"$ref": f"#/channels/{topic}/messages/{name}"} for name in message_names],
    }


def _message(name: str, payload: dict[str, Any], key: dict[str, Any], headers: str | None = None,
             content_type: str = "application/json") -> dict[str, Any]:
    message: dict[str, Any] = {"name": name, "title": name, "contentType": content_type}
    if headers:
        message["headers"] = {"$ref": SCHEMAS + headers}
    message["payload"] = payload
    message["bindings"] = {"kafka": {"key": key, "bindingVersion": KAFKA_BINDING_VERSION}}
    return message


def _command_message(command: type[BaseModel], payload: dict[str, Any], key_field: str) -> dict[str, Any]:
    key = {"type": "string", "description": f"The command's {key_field}."}
    return _message(command.__name__, payload, key)


def _event_message(event_type: str, payload: dict[str, Any]) -> dict[str, Any]:
    key = {"type": "string", "description": f"The event's {_key_text(event_type)}."}
    message = _message(event_type, payload, key, headers="CloudEventsHeaders")
    message["correlationId"] = {"location": "$message.header#/correlation_id"}
    return message


def _dead_letter_message() -> dict[str, Any]:
    payload = {"type": "string", "format": "binary", "description": "The original value's bytes, unchanged."}
    key = {"type": ["string", "null"], "description": "The original message's key, unchanged."}
    return _message("DeadLetter", payload, key, "DeadLetterHeaders", "application/octet-stream")


def _key_text(event_type: str) -> str:
    fields = EVENT_KEYS.get(event_type)
    if fields is None:
        raise LookupError(f"{event_type} is published but has no Kafka key in infra.asyncapi.EVENT_KEYS")
    return ", else ".join(fields)


def _sorted(mapping: dict[str, Any]) -> dict[str, Any]:
    return dict(sorted(mapping.items()))


# --- files: render, write, check ----------------------------------------------------------------


def render_yaml(document: dict[str, Any]) -> str:
    # Insertion order is already deterministic; keeping it puts `asyncapi`/`info` first.
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100)


def write(path: Path = DOCUMENT_PATH) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_yaml(build_document()))


def check(path: Path = DOCUMENT_PATH) -> list[str]:
    """What differs between the committed document and a fresh build ([] when up to date)."""
    return check_rendered(path, render_yaml(build_document()), yaml.safe_load)


def check_rendered(path: Path, fresh: str, load: Callable[[str], Any]) -> list[str]:
    """What differs between a committed document (read with `load`) and its fresh rendering,
    by path in the document; [] when it is current. Shared by the AsyncAPI and OpenAPI ones."""
    if not path.exists():
        return [f"{path} does not exist"]
    committed = path.read_text()
    if committed == fresh:
        return []
    return differences(load(committed), load(fresh), "") or [f"{path}: same content, different formatting"]


def differences(committed: Any, fresh: Any, path: str) -> list[str]:
    """Paths (JSON-pointer style: topic names contain dots) where the two documents differ."""
    if isinstance(committed, dict) and isinstance(fresh, dict):
        found: list[str] = []
        for key in sorted(committed.keys() | fresh.keys(), key=str):
            where = f"{path}/{key}"
            if key not in fresh:
                found.append(f"{where}: in the committed document, no longer generated")
            elif key not in committed:
                found.append(f"{where}: generated, missing from the committed document")
            else:
                found += differences(committed[key], fresh[key], where)
        return found
    if isinstance(committed, list) and isinstance(fresh, list) and len(committed) == len(fresh):
        return [d for i, (c, f) in enumerate(zip(committed, fresh, strict=True))
                for d in differences(c, f, f"{path}/{i}")]
    return [] if committed == fresh else [f"{path or '/'}: committed {committed!r}, generated {fresh!r}"]


# --- the baseline and schema compatibility ------------------------------------------------------


class IncompatibleChange(ValueError):
    """A published event changed in a way its consumers may not survive."""


def event_schemas() -> dict[str, dict[str, Any]]:
    """event_type -> the self-contained JSON schema of that event as the service writes it."""
    return {name: event.model_json_schema(mode="serialization")
            for name, event in sorted(EVENTS_BY_TYPE.items())}


def write_baseline(directory: Path = BASELINE_DIR) -> list[Path]:
    """Snapshot every event's schema. Refuses to overwrite a baseline with an incompatible one:
    a breaking change needs a new schema_version (and a new directory), not a new snapshot."""
    directory.mkdir(parents=True, exist_ok=True)
    schemas = event_schemas()
    problems = [f"{name}: {problem}" for name, old in read_baseline(directory).items() if name in schemas
                for problem in incompatibilities(old, schemas[name])]
    if problems:
        raise IncompatibleChange("; ".join(problems))
    written = []
    for name, schema in schemas.items():
        path = directory / f"{name}.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written


def read_baseline(directory: Path = BASELINE_DIR) -> dict[str, dict[str, Any]]:
    """event_type -> the schema committed for it."""
    return {path.stem: json.loads(path.read_text()) for path in sorted(directory.glob("*.json"))}


def incompatibilities(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Why a consumer of events described by `old` may break on `new` ([] when `new` is additive).

    Reported: a property removed; a type, format, const or `$ref` changed (including a
    field becoming nullable); enum values removed (or values newly restricted to an enum);
    a property newly required (events already in the topic lack it).
    Allowed: new optional properties, and new enum values. A new value (say a new
    PaymentFailed reason) is a risk for a consumer that switches exhaustively over the
    values, but the contract calls it additive: the event type carries the outcome, the
    reason only refines it, so consumers must treat an unknown value as "other".
    Constraints (maxLength, pattern, minimum...) are not compared: events carry none.
    """
    return _compare(_inline(old), _inline(new), "")


def _inline(schema: dict[str, Any]) -> dict[str, Any]:
    """Replace local `$ref`s with their definitions, so both sides compare by shape, not by name."""
    definitions = schema.get("$defs", {})

    def resolve(node: Any, seen: tuple[str, ...]) -> Any:
        if isinstance(node, list):
            return [resolve(item, seen) for item in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/") and ref not in seen:
            rest = {k: v for k, v in node.items() if k != "$ref"}
            return resolve({**definitions[ref.removeprefix("#/$defs/")], **rest}, (*seen, ref))
        if isinstance(node.get("allOf"), list) and len(node["allOf"]) == 1:  # pydantic's $ref wrapper
            rest = {k: v for k, v in node.items() if k != "allOf"}
            return resolve({**node["allOf"][0], **rest}, seen)
        return {key: resolve(value, seen) for key, value in node.items() if key != "$defs"}

    return resolve(schema, ())


def _compare(old: dict[str, Any], new: dict[str, Any], path: str) -> list[str]:
    where = path or "(root)"
    old_types, new_types = _types(old), _types(new)
    if old_types != new_types:
        return [f"{where}: type changed from {sorted(old_types)} to {sorted(new_types)}"]
    problems: list[str] = []
    new_alternatives = {_types(alternative): alternative for alternative in _alternatives(new)}
    for alternative in _alternatives(old):
        match = new_alternatives.get(_types(alternative))
        if match is None:
            problems.append(f"{where}: the {sorted(_types(alternative))} alternative changed shape")
        else:
            problems += _compare_one(alternative, match, path)
    return problems


def _compare_one(old: dict[str, Any], new: dict[str, Any], path: str) -> list[str]:
    where = path or "(root)"
    problems = [f"{where}: {keyword} changed from {old.get(keyword)!r} to {new.get(keyword)!r}"
                for keyword in ("format", "const", "$ref") if old.get(keyword) != new.get(keyword)]
    if "enum" in new:
        removed = [value for value in old.get("enum", []) if value not in new["enum"]]
        if "enum" not in old:
            problems.append(f"{where}: values newly restricted to {new['enum']!r}")
        elif removed:
            problems.append(f"{where}: enum values removed: {removed!r}")
    old_properties, new_properties = old.get("properties", {}), new.get("properties", {})
    for name, schema in old_properties.items():
        inner = f"{path}.{name}" if path else name
        if name not in new_properties:
            problems.append(f"{inner}: removed")
        else:
            problems += _compare(schema, new_properties[name], inner)
    for name in sorted(set(new.get("required", [])) - set(old.get("required", []))):
        problems.append(f"{f'{path}.{name}' if path else name}: newly required")
    for keyword, suffix in (("items", "[]"), ("additionalProperties", "{}")):
        if isinstance(old.get(keyword), dict) and isinstance(new.get(keyword), dict):
            problems += _compare(old[keyword], new[keyword], f"{path}{suffix}")
    return problems


def _alternatives(schema: dict[str, Any]) -> list[dict[str, Any]]:
    return schema.get("anyOf") or schema.get("oneOf") or [schema]


def _types(schema: dict[str, Any]) -> frozenset[str]:
    """The JSON types a value of `schema` may have; "any" when the schema does not say."""
    alternatives = schema.get("anyOf") or schema.get("oneOf")
    if alternatives:
        return frozenset().union(*(_types(alternative) for alternative in alternatives))
    declared = schema.get("type")
    if isinstance(declared, str):
        return frozenset({declared})
    if isinstance(declared, list):
        return frozenset(declared)
    if "const" in schema:
        return frozenset({_json_type(schema["const"])})
    if "enum" in schema:
        return frozenset(_json_type(value) for value in schema["enum"])
    if "$ref" in schema:  # a recursive definition left unresolved: compare by name
        return frozenset({f"$ref:{schema['$ref']}"})
    return frozenset({"any"})


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return {str: "string", list: "array", dict: "object"}.get(type(value), "any")
