"""Pydantic JSON schema -> Kubernetes *structural* OpenAPI v3 schema.

The API server accepts only structural schemas: every node has a `type`, no `$ref`, `anyOf` only
in the int-or-string shape, `properties` and `additionalProperties` never together, and numeric
exclusive bounds in the OpenAPI v3.0 form (`exclusiveMinimum: true` beside `minimum`). Pydantic
emits JSON Schema 2020-12, so this module rewrites it: inline `$defs`, turn `Optional[X]`
(`anyOf [X, null]`) into X left out of `required`, turn `Union[int, str]` into
`x-kubernetes-int-or-string`, and drop what Kubernetes does not want (titles, `default: null`).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

# Keys first in this order (the rest keep pydantic's order); makes the YAML easy to read.
_KEY_ORDER = ("description", "type", "format", "default", "enum")


class NotStructural(ValueError):
    """The pydantic model produced a schema shape Kubernetes cannot store."""


def structural_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's schema (by alias) as a Kubernetes structural schema."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    schema = _convert(raw, defs, path=model.__name__)
    schema["properties"] = {a: schema["properties"][a] for a in _own_fields_first(model)}
    return schema


def _own_fields_first(model: type[BaseModel]) -> list[str]:
    """Field aliases, the model's own before inherited ones (pydantic puts bases first), so a
    spec reads `repoId, revision, ...` before the shared `resources, nodeSelector, ...`."""
    order: list[str] = []
    for cls in model.__mro__:
        for name in getattr(cls, "__annotations__", {}):
            if name in model.model_fields and name not in order:
                order.append(name)
    return [model.model_fields[n].alias or n for n in order]


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Inline a `$ref` (or a one-element `allOf`); the referring node's own keys win."""
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        siblings = {k: v for k, v in node.items() if k != "$ref"}
        return {**target, **siblings}
    if "allOf" in node and len(node["allOf"]) == 1:
        siblings = {k: v for k, v in node.items() if k != "allOf"}
        return {**_resolve(node["allOf"][0], defs), **siblings}
    return node


def _collapse_any_of(node: dict[str, Any], defs: dict[str, Any], path: str) -> dict[str, Any]:
    options = [_resolve(o, defs) for o in node["anyOf"] if o.get("type") != "null"]
    siblings = {k: v for k, v in node.items() if k != "anyOf"}
    if len(options) == 1:
        return {**options[0], **siblings}
    if sorted(o.get("type") for o in options) == ["integer", "string"]:
        return {
            **siblings,
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "x-kubernetes-int-or-string": True,
        }
    raise NotStructural(f"{path}: a union of {[o.get('type') for o in options]} has no structural form")


def _convert(node: dict[str, Any], defs: dict[str, Any], path: str, is_field: bool = True) -> dict[str, Any]:
    node = _resolve(node, defs)
    if "anyOf" in node:
        node = _collapse_any_of(node, defs, path)
        if "anyOf" in node:  # int-or-string: already final
            return _ordered({k: v for k, v in node.items() if k != "title" and not (k == "default" and v is None)})
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "title" or (key == "default" and value is None):
            continue
        if key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
        elif key == "properties":
            out[key] = {name: _convert(child, defs, f"{path}.{name}") for name, child in value.items()}
        elif key == "items":
            out[key] = _convert(value, defs, f"{path}[]", is_field=False)
        elif key == "additionalProperties":
            if isinstance(value, dict):
                out[key] = _convert(value, defs, f"{path}{{}}", is_field=False)
            elif value is True and not node.get("x-kubernetes-preserve-unknown-fields"):
                raise NotStructural(f"{path}: free-form object needs x-kubernetes-preserve-unknown-fields")
            # `false` (pydantic's extra="forbid") is dropped: Kubernetes prunes unknown fields and
            # forbids additionalProperties beside properties.
        else:
            out[key] = value
    if "properties" in out and "additionalProperties" in out:
        del out["additionalProperties"]
    if "type" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
        raise NotStructural(f"{path}: no type")
    if is_field and "description" not in out:
        raise NotStructural(f"{path}: every field needs a description (kubectl explain shows it)")
    if out.get("required") == []:
        del out["required"]
    return _ordered(out)


def _ordered(node: dict[str, Any]) -> dict[str, Any]:
    first = {k: node[k] for k in _KEY_ORDER if k in node}
    return {**first, **{k: v for k, v in node.items() if k not in first}}
