"""Published events change additively only: the models stay compatible with the v1 baseline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from infra.asyncapi import (
    BASELINE_DIR,
    IncompatibleChange,
    event_schemas,
    incompatibilities,
    read_baseline,
    write_baseline,
)
from models.events import PaymentCaptured

ROOT = Path(__file__).resolve().parents[2]
BASELINE = read_baseline(ROOT / BASELINE_DIR)
CURRENT = event_schemas()


@pytest.mark.parametrize("event_type", sorted(BASELINE))
def test_current_models_are_compatible_with_the_baseline(event_type: str) -> None:
    assert event_type in CURRENT, f"{event_type} is no longer published"
    problems = incompatibilities(BASELINE[event_type], CURRENT[event_type])
    assert not problems, (
        f"{event_type} changed in a way its consumers may not survive: " + "; ".join(problems)
        + ". Make the change additive (a new field with a default), or publish a new schema_version."
    )


def test_every_published_event_has_a_baseline() -> None:
    missing = sorted(set(CURRENT) - set(BASELINE))
    assert not missing, f"no baseline for {missing}: run infra.asyncapi.write_baseline() and commit it"


# Hand-made schemas in pydantic's shape: each rule on its own.
def schema(properties: dict[str, Any], required: list[str], **extra: Any) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required, **extra}


STRING = {"type": "string"}
OLD = schema(
    {
        "id": {"type": "string", "format": "uuid"},
        "amount": {"type": "integer"},
        "reason": {"$ref": "#/$defs/Reason"},
        "note": {"anyOf": [STRING, {"type": "null"}], "default": None},
        "errors": {"type": "array", "items": schema({"field": STRING}, ["field"])},
    },
    ["id", "amount", "reason"],
    **{"$defs": {"Reason": {"type": "string", "enum": ["declined", "unavailable"]}}},
)


def changed(path: str, value: Any = None, *, delete: bool = False) -> dict[str, Any]:
    """A copy of OLD with the node at a dotted path replaced (or deleted)."""
    new = json.loads(json.dumps(OLD))
    *parents, last = path.split(".")
    node = new
    for part in parents:
        node = node[part]
    if delete:
        del node[last]
    else:
        node[last] = value
    return new


def test_identical_schemas_are_compatible() -> None:
    assert incompatibilities(OLD, json.loads(json.dumps(OLD))) == []


def test_a_removed_field_is_reported() -> None:
    assert incompatibilities(OLD, changed("properties.amount", delete=True)) == ["amount: removed"]


def test_a_removed_nested_field_is_reported() -> None:
    new = changed("properties.errors.items.properties.field", delete=True)
    assert incompatibilities(OLD, new) == ["errors[].field: removed"]


def test_a_type_change_is_reported() -> None:
    assert incompatibilities(OLD, changed("properties.amount", STRING)) == [
        "amount: type changed from ['integer'] to ['string']"
    ]


def test_a_field_becoming_nullable_is_a_type_change() -> None:
    new = changed("properties.amount", {"anyOf": [{"type": "integer"}, {"type": "null"}]})
    assert incompatibilities(OLD, new) == ["amount: type changed from ['integer'] to ['integer', 'null']"]


def test_a_format_change_is_reported() -> None:
    assert incompatibilities(OLD, changed("properties.id", STRING)) == [
        "id: format changed from 'uuid' to None"
    ]


def test_a_new_required_field_is_reported() -> None:
    new = changed("properties.fee", {"type": "integer"})
    new["required"].append("fee")
    assert incompatibilities(OLD, new) == ["fee: newly required"]


def test_an_optional_field_becoming_required_is_reported() -> None:
    new = changed("required", [*OLD["required"], "note"])
    assert incompatibilities(OLD, new) == ["note: newly required"]


def test_a_new_optional_field_is_compatible() -> None:
    assert incompatibilities(OLD, changed("properties.fee", {"type": "integer", "default": 0})) == []


def test_a_new_enum_value_is_compatible() -> None:
    # A documented choice: additive per the contract; consumers treat an unknown reason as "other".
    new = changed("$defs.Reason.enum", ["declined", "unavailable", "expired"])
    assert incompatibilities(OLD, new) == []


def test_a_removed_enum_value_is_reported() -> None:
    new = changed("$defs.Reason.enum", ["declined"])
    assert incompatibilities(OLD, new) == ["reason: enum values removed: ['unavailable']"]


def test_a_ref_and_its_inlined_definition_are_the_same_shape() -> None:
    new = changed("properties.reason", {"type": "string", "enum": ["declined", "unavailable"]})
    assert incompatibilities(OLD, new) == []


# The same rules on pydantic's own output for a real event.
class WithOptionalNote(PaymentCaptured):
    note: str | None = None


class WithRequiredFee(PaymentCaptured):
    fee: int


class WithTextAmount(PaymentCaptured):
    amount: str  # type: ignore[assignment]


def serialized(model: type[PaymentCaptured]) -> dict[str, Any]:
    return model.model_json_schema(mode="serialization")


def test_pydantic_models_follow_the_same_rules() -> None:
    old = serialized(PaymentCaptured)
    assert incompatibilities(old, serialized(WithOptionalNote)) == []
    assert incompatibilities(old, serialized(WithRequiredFee)) == ["fee: newly required"]
    assert incompatibilities(old, serialized(WithTextAmount)) == [
        "amount: type changed from ['integer'] to ['string']"
    ]
    assert incompatibilities(serialized(WithOptionalNote), old) == ["note: removed"]


def test_write_baseline_refuses_to_overwrite_with_an_incompatible_schema(tmp_path: Path) -> None:
    write_baseline(tmp_path)
    assert read_baseline(tmp_path) == json.loads(json.dumps(CURRENT))
    captured = tmp_path / "PaymentCaptured.json"
    published = json.loads(captured.read_text())
    published["properties"]["legacy_field"] = STRING
    captured.write_text(json.dumps(published))
    with pytest.raises(IncompatibleChange, match="PaymentCaptured: legacy_field: removed"):
        write_baseline(tmp_path)
