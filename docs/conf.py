"""Sphinx configuration of igsend's documentation site (built by ``ops/docs`` into ``site/``).

The reference pages are generated from what the code already knows: the CLI from the click commands
(sphinx-click), the HTTP API from the OpenAPI document the API serves (written below at build time, then read by
sphinxcontrib-openapi), the Python API from docstrings and type hints (autodoc).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

project = "igsend"
author = "the igsend developers"
copyright = "2026, the igsend developers"  # noqa: A001 (Sphinx's name)

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx_click",
    "sphinxcontrib.openapi",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "_generated/*.md"]
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3  # links like settings.md#redis-over-tls resolve to headings, checked by -n
html_theme = "furo"
html_title = "igsend"
html_show_sourcelink = False

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
# Without network access there is no intersphinx: types from other libraries are named, not linked.
nitpick_ignore_regex = [
    (r"py:.*", r"(redis|celery|kombu|marshmallow|click|flask|requests|datetime|collections|typing|enum|pathlib)"
               r"(\..*)?"),
    (r"py:.*", r"(Redis|Pipeline|Celery|Schema|ValidationError|Enum|Path|Iterable|Iterator|Callable|Mapping)"),
]


def _write_openapi() -> None:
    """The OpenAPI document exactly as ``igsend api`` serves it at ``/openapi.json``."""
    from producers.api import create_app

    response = create_app(require_keys=False).test_client().get("/openapi.json")
    assert response.status_code == 200, response.status_code
    document = response.get_json()
    out = Path(__file__).parent / "_generated" / "openapi.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    # sphinxcontrib-httpdomain renders numbered statuses only: flask-smorest's catch-all "default" answer (the
    # Error shape, which every numbered error answer also documents) is left out of the rendered copy.
    for operations in document["paths"].values():
        for operation in operations.values():
            if isinstance(operation, dict):
                operation.get("responses", {}).pop("default", None)
    out.with_name("openapi-rendered.json").write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")


_write_openapi()
