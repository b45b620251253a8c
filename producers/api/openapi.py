"""The OpenAPI document's settings and the components its parts refer to by name (Message, FieldErrors, ...)."""

from __future__ import annotations

import json
from typing import Any

from marshmallow import Schema, fields, validate

from schemas import KINDS, SCHEMAS
from schemas.messages import BaseSchema

MAX_BATCH = 1000


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def json_request(component: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": ref(component)}}}


def _document_schema(kind: str) -> type[Schema]:
    """The kind's schema with ``kind`` pinned to its value, so the OpenAPI oneOf is unambiguous."""
    pinned = fields.String(required=True, validate=validate.OneOf([kind]), metadata={"description": "message kind"})
    name = "".join(part.capitalize() for part in kind.split("_"))  # quick_replies -> QuickRepliesMessage
    return type(f"{name}Message", (SCHEMAS[kind],), {"kind": pinned})


DOCUMENT_SCHEMAS = {kind: _document_schema(kind) for kind in KINDS}


def _server_default(converter: Any, field: fields.Field[Any], ret: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """Message fields the server fills in (``account``, ``reaction``, ...) are documented without ``default``:
    openapi-typescript types a property with a default as always present, so a client would have to send it.
    The description says what the server uses instead."""
    if isinstance(field.parent, BaseSchema) and "default" in ret:
        default = ret.pop("default")
        if default is not None:
            ret["description"] = f"{ret.get('description', '')} (default {json.dumps(default)})".lstrip()
    return {}


#: Any message: one of the kinds, told apart by ``kind``. The mapping names each kind's value, so generators
#: (openapi-typescript, openapi-python-client, openapi-generator) type ``kind`` as "text", not "TextMessage".
MESSAGE_COMPONENT: dict[str, Any] = {
    "description": "a message document: one of the kinds, chosen by `kind`",
    "oneOf": [ref(DOCUMENT_SCHEMAS[kind].__name__) for kind in KINDS],
    "discriminator": {"propertyName": "kind", "mapping": {
        kind: ref(DOCUMENT_SCHEMAS[kind].__name__)["$ref"] for kind in KINDS}},
}
#: marshmallow's error messages: field -> its messages, or for a nested field (list items by index) the same
#: structure one level down.
FIELD_ERRORS_COMPONENT: dict[str, Any] = {
    "type": "object",
    "description": "field -> what is wrong with it (a nested field or list item: the same structure again)",
    "additionalProperties": {"anyOf": [{"type": "array", "items": {"type": "string"}}, ref("FieldErrors")]},
}
#: A batch: up to MAX_BATCH items, each judged on its own. An item may be any JSON value: a valid Message is
#: queued, anything else (a broken message, a number, null) is answered `invalid` by index in the 200's results,
#: and the other items are still queued. So an item is declared as any value, its description naming Message,
#: not as a Message: the document and the answer agree on what is valid. (``anyOf: [Message, {}]`` says the same
#: but makes Schemathesis's coverage phase build hundreds of batches of every kind: minutes per run.)
BATCH_REQUEST_COMPONENT: dict[str, Any] = {
    "type": "object", "required": ["messages"],
    "properties": {"messages": {
        "type": "array", "maxItems": MAX_BATCH,
        "description": "the messages, each judged on its own: a valid Message is queued, any other item is "
                       "answered `invalid` (with its errors) in `results` at its index, and never stops the others",
        "items": {"description": "a Message; anything else (a message that breaks a rule, or not an object) is "
                                 "answered invalid at its index"}}},
}


class ErrorDetailSchema(Schema):
    code = fields.Integer(allow_none=True)
    subcode = fields.Integer(allow_none=True)
    message = fields.String(allow_none=True)
    fbtrace_id = fields.String(allow_none=True)
    http_status = fields.Integer(allow_none=True)
    # "class" is a Python keyword; data_key keeps the JSON name
    error_class = fields.String(data_key="class", allow_none=True)


def settings(keys: bool) -> dict[str, Any]:
    """The app's config for flask-smorest; ``keys``: whether the API asks for keys (the document says so)."""
    return {
        "API_TITLE": "igsend", "API_VERSION": "1", "OPENAPI_VERSION": "3.0.3", "OPENAPI_URL_PREFIX": "/",
        "OPENAPI_JSON_PATH": "openapi.json",
        "API_SPEC_OPTIONS": {"components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
                             "security": [{"bearer": []}] if keys else [],
                             # relative: the API's own origin, wherever it is served (generators take a base URL)
                             "servers": [{"url": "/", "description": "the server that serves this document"}]},
    }


def _field_rules(converter: Any, field: fields.Field[Any], ret: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """The rules of igsend's own field types (``schemas.fields``: lengths, patterns, control characters, URLs,
    moments), as each states them in ``json_schema()``; a field's own ``metadata`` wins over them."""
    rules_of = getattr(field, "json_schema", None)
    if rules_of is None:
        return {}
    rules: dict[str, Any] = rules_of()
    if "anyOf" in rules:
        ret.pop("type", None)  # the alternatives carry their types
    return {name: value for name, value in rules.items() if name not in field.metadata}


#: Where a component states its schema's own rules (JSON Schema's ``oneOf``/``anyOf`` of ``required``): an extension,
#: not the keywords themselves, because generators turn an object with a top-level ``oneOf`` into a union of
#: anonymous types or skip it (openapi-python-client drops ImageMessage). Fuzzers read it
#: (igsend/local/fuzz_hooks.py).
RULES_EXTENSION = "x-igsend-rules"


def add_schema_rules(api: Any) -> None:
    """Add to each component the rules its schema states as ``OPENAPI_RULES`` (its ``@validates_schema`` checks in
    JSON Schema's words, under RULES_EXTENSION); after every blueprint, once every schema has its component."""
    schemas = api.spec.components.schemas
    named = [(key[0], name) for key, name in api.ma_plugin.converter.refs.items()]
    named += [(schema, schema.__name__) for schema in DOCUMENT_SCHEMAS.values()]
    for schema, name in named:
        rules = getattr(schema, "OPENAPI_RULES", None)
        if rules and name in schemas:
            schemas[name][RULES_EXTENSION] = rules


def add_components(api: Any) -> None:
    """The components referred to by name, on ``api``'s spec before any blueprint's (their order is the
    document's), and message fields documented without the defaults the server fills in."""
    api.ma_plugin.converter.add_attribute_function(_server_default)
    api.ma_plugin.converter.add_attribute_function(_field_rules)
    for schema in DOCUMENT_SCHEMAS.values():
        api.spec.components.schema(schema.__name__, schema=schema)
    api.spec.components.schema("ErrorDetail", schema=ErrorDetailSchema)
    api.spec.components.schema("Message", component=MESSAGE_COMPONENT)
    api.spec.components.schema("FieldErrors", component=FIELD_ERRORS_COMPONENT)
    api.spec.components.schema("BatchRequest", component=BATCH_REQUEST_COMPONENT)
