"""The served OpenAPI document is the one saved in tests/data/openapi.json, byte for byte: the same paths,
operations, operationIds, responses and components, in the same order. A change to the document is then a
deliberate one, made with the snapshot in the same commit; to write it again from the code:

    .venv/bin/python -c 'from tests.test_openapi_stable import served; print(served(["test-api-key"]))' \\
        > tests/data/openapi.json
"""

from __future__ import annotations

import json
from pathlib import Path

from producers.api import create_app

SNAPSHOT = Path(__file__).parent / "data" / "openapi.json"


#: flask-smorest names a response component after ``http.HTTPStatus``, whose 422 Python 3.13 renamed (RFC 9110):
#: the snapshot keeps 3.11's names, so the comparison holds on both interpreters CI runs.
_RENAMED = {"UNPROCESSABLE_CONTENT": "UNPROCESSABLE_ENTITY", "Unprocessable Content": "Unprocessable Entity"}


def served(api_keys: list[str] | None) -> str:
    """The document as ``GET /openapi.json`` answers it (no Redis needed), in 3.11's names of HTTP statuses."""
    app = create_app(api_keys=api_keys, require_keys=api_keys is not None)
    answer = app.test_client().get("/openapi.json")
    assert answer.status_code == 200, answer.status_code
    document = answer.get_data(as_text=True)
    for new, old in _RENAMED.items():
        document = document.replace(f'"{new}"', f'"{old}"').replace(f"/{new}\"", f"/{old}\"")
    return document


def test_the_served_document_is_the_snapshot() -> None:
    document, saved = served(["test-api-key"]), SNAPSHOT.read_text(encoding="utf-8")
    assert json.loads(document) == json.loads(saved)  # what differs, shown field by field
    assert list(json.loads(document)["paths"]) == list(json.loads(saved)["paths"])
    assert document + "\n" == saved  # and in the same order throughout


def test_without_keys_only_the_security_requirement_differs() -> None:
    expected = {**json.loads(SNAPSHOT.read_text(encoding="utf-8")), "security": []}
    assert json.loads(served(None)) == expected
