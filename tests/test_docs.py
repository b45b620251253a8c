"""The README stays a five-minute read that points into docs/, and its links hold; the runbooks have one source.

The site itself is checked by its strict build (`ops/docs`: every cross-reference, anchor and toctree entry);
these checks cover what the build does not read: README.md, and that every runbook in ops/runbooks/ has its page.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
RUNBOOKS = ROOT / "ops" / "runbooks"

#: [text](target) in Markdown, target without spaces; images too (the same rule applies to them).
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's (and MyST's "github" preset's) anchor of a heading: lowercase, spaces to '-', punctuation dropped."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The anchors of a Markdown page's headings (code blocks skipped)."""
    text = re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"), flags=re.M | re.S)
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+?)\s*$", text, re.M)}


def readme_links() -> list[str]:
    text = re.sub(r"^```.*?^```", "", README.read_text(encoding="utf-8"), flags=re.M | re.S)
    return LINK.findall(text)


def test_slug_matches_github() -> None:
    assert slug("Errors: one taxonomy, decided by Graph code") == "errors-one-taxonomy-decided-by-graph-code"
    assert slug("Going live with a real Instagram account") == "going-live-with-a-real-instagram-account"
    assert slug("`IGSEND_X` settings") == "igsend_x-settings"


def test_the_readme_is_short() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines: move the detail into docs/"


def test_every_relative_link_in_the_readme_resolves() -> None:
    links = [link for link in readme_links() if not re.match(r"[a-z][a-z0-9+.-]*:", link)]  # not http:, mailto:
    assert any(link.startswith("docs/") for link in links), "the README links into docs/"
    for link in links:
        path, _, anchor = link.partition("#")
        target = (README.parent / path) if path else README
        assert target.is_file(), f"README.md links to {link}: no such file"
        if anchor and target.suffix == ".md":
            assert anchor in anchors(target), f"README.md links to {link}: {path or 'README.md'} has no such heading"


def test_every_runbook_has_a_page_that_includes_it() -> None:
    runbooks = sorted(path.name for path in RUNBOOKS.glob("*.md"))
    assert runbooks, "ops/runbooks/ has no runbook"
    pages = {path.name: path.read_text(encoding="utf-8") for path in (DOCS / "runbooks").glob("*.md")}
    for name in runbooks:
        assert name in pages, f"ops/runbooks/{name} has no page docs/runbooks/{name}"
        include = re.fullmatch(r"```\{include\} (\S+)\n```\n?", pages[name])
        assert include, f"docs/runbooks/{name} must hold only the include of its runbook (one source, not two)"
        assert (DOCS / "runbooks" / include.group(1)).resolve() == (RUNBOOKS / name).resolve(), include.group(1)
    assert set(pages) - {"index.md"} == set(runbooks), "a runbook page without its runbook in ops/runbooks/"
    index = pages["index.md"]
    for name in runbooks:
        assert re.search(rf"^{re.escape(name.removesuffix('.md'))}$", index, re.M), f"runbooks/index.md: {name}"
