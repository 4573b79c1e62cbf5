"""Dataset schemas in Amazon Personalize's Avro form, and the reserved column names.

A dataset group may carry ``schemas/{interactions,items,users}.json``; without them the
schema is inferred from the header: reserved names get their Personalize types, other
interaction columns are contextual (categorical) metadata, and other item/user columns are
numeric when every value parses as a number, categorical strings otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .errors import InputError

DATASET_TYPES = ("interactions", "items", "users")

REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {
    "interactions": ("USER_ID", "ITEM_ID", "TIMESTAMP"),
    "items": ("ITEM_ID",),
    "users": ("USER_ID",),
}

# Reserved names and their types; a field listed here must have a compatible type.
RESERVED_TYPES: dict[str, dict[str, str]] = {
    "interactions": {
        "USER_ID": "string",
        "ITEM_ID": "string",
        "TIMESTAMP": "long",
        "EVENT_TYPE": "string",
        "EVENT_VALUE": "float",
        "IMPRESSION": "string",
        "RECOMMENDATION_ID": "string",
        "EVENT_ATTRIBUTION_SOURCE": "string",  # metric attribution (attribution.py), not a model feature
    },
    "items": {"ITEM_ID": "string", "CREATION_TIMESTAMP": "long"},
    "users": {"USER_ID": "string"},
}

PRIMITIVE_TYPES = ("string", "int", "long", "float", "double", "boolean")
NUMERIC_TYPES = ("int", "long", "float", "double")
INTEGER_TYPES = ("int", "long")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Field:
    name: str
    type: str  # one of PRIMITIVE_TYPES
    nullable: bool = False
    categorical: bool = False
    textual: bool = False

    @property
    def is_numeric(self) -> bool:
        return self.type in NUMERIC_TYPES

    def to_avro(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": ["null", self.type] if self.nullable else self.type}
        if self.categorical:
            out["categorical"] = True
        if self.textual:
            out["textual"] = True
        return out


@dataclass(frozen=True)
class Schema:
    dataset_type: str
    fields: tuple[Field, ...]
    from_file: bool = False

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.fields]

    def field(self, name: str) -> Field | None:
        for f in self.fields:
            if f.name == name:
                return f
        return None

    def __contains__(self, name: str) -> bool:
        return self.field(name) is not None

    @property
    def metadata_fields(self) -> list[Field]:
        """Fields that are neither ids nor reserved interaction columns."""
        reserved = set(RESERVED_TYPES[self.dataset_type])
        return [f for f in self.fields if f.name not in reserved]

    def to_avro(self) -> dict[str, Any]:
        return {
            "type": "record",
            "name": self.dataset_type.capitalize(),
            "namespace": "com.amazonaws.personalize.schema",
            "fields": [f.to_avro() for f in self.fields],
            "version": "1.0",
        }


def parse_avro(dataset_type: str, doc: Any, source: str) -> Schema:
    """Parse an Avro record schema as Personalize accepts it; errors name the field."""
    if not isinstance(doc, dict) or doc.get("type") != "record" or not isinstance(doc.get("fields"), list):
        raise InputError(f'{source}: not an Avro record schema (need "type": "record" and a "fields" list)')
    fields: list[Field] = []
    seen: set[str] = set()
    for i, raw in enumerate(doc["fields"]):
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
            raise InputError(f'{source}: field #{i + 1} has no "name"')
        name = raw["name"]
        if not _NAME.match(name):
            raise InputError(f"{source}: field {name!r} is not a valid field name")
        if name in seen:
            raise InputError(f"{source}: field {name!r} is declared twice")
        seen.add(name)
        ftype, nullable = _parse_type(raw.get("type"), f"{source}: field {name!r}")
        reserved = RESERVED_TYPES[dataset_type].get(name)
        if reserved is not None and not _compatible(reserved, ftype):
            raise InputError(f"{source}: field {name!r} must be of type {reserved}, not {ftype}")
        if name in REQUIRED_FIELDS[dataset_type] and nullable:
            raise InputError(f"{source}: field {name!r} is required and cannot be nullable")
        categorical = bool(raw.get("categorical", False))
        if categorical and ftype != "string":
            raise InputError(f"{source}: field {name!r} is categorical, so its type must be string")
        fields.append(Field(name, ftype, nullable, categorical, bool(raw.get("textual", False))))
    for req in REQUIRED_FIELDS[dataset_type]:
        if req not in seen:
            raise InputError(f"{source}: required field {req!r} is missing from the {dataset_type} schema")
    return Schema(dataset_type, tuple(fields), from_file=True)


def _parse_type(value: Any, where: str) -> tuple[str, bool]:
    if isinstance(value, str):
        if value not in PRIMITIVE_TYPES:
            raise InputError(f"{where}: unsupported type {value!r} (use one of {', '.join(PRIMITIVE_TYPES)})")
        return value, False
    if isinstance(value, list):
        non_null = [v for v in value if v != "null"]
        if len(non_null) != 1 or len(value) - len(non_null) > 1:
            raise InputError(f'{where}: union type {value!r} must be ["null", <type>]')
        return _parse_type(non_null[0], where)[0], len(non_null) < len(value)
    raise InputError(f'{where}: missing or invalid "type"')


def _compatible(reserved: str, given: str) -> bool:
    if reserved == given:
        return True
    groups = [set(INTEGER_TYPES), {"float", "double", "int", "long"}]
    if reserved in INTEGER_TYPES:
        return given in INTEGER_TYPES
    return any(reserved in g and given in g for g in groups[1:])


def infer_schema(dataset_type: str, columns: Iterable[str], numeric_columns: Iterable[str] = ()) -> Schema:
    """Schema for a file without schema JSON: reserved names by type, the rest as metadata.

    ``numeric_columns`` are the non-reserved columns whose values all parse as numbers."""
    numeric = set(numeric_columns)
    reserved = RESERVED_TYPES[dataset_type]
    fields = []
    for name in columns:
        if name in reserved:
            fields.append(Field(name, reserved[name], nullable=name not in REQUIRED_FIELDS[dataset_type]))
        elif dataset_type != "interactions" and name in numeric:
            fields.append(Field(name, "float", nullable=True))
        else:
            fields.append(Field(name, "string", nullable=True, categorical=True))
    return Schema(dataset_type, tuple(fields), from_file=False)
