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


def test_the_python_callback_verification_on_the_callbacks_page_verifies_what_igsend_sends(monkeypatch, capsys) -> None:
    """docs/callbacks.md's "In Python" block, run as written, handles callbacks signed by igsend's own sender
    (workers.callbacks.send_once): a delivered and a dead event pass, a retry of one is dropped, a changed body or
    another secret is refused."""
    import json
    from types import SimpleNamespace

    from igsend.core.callbacks import Endpoint
    from workers.callbacks import send_once

    text = (DOCS / "callbacks.md").read_text(encoding="utf-8")
    section = re.search(r"^### In Python\n(.*?)(?=^#+ |\Z)", text, re.M | re.S)
    assert section, "docs/callbacks.md has no heading 'In Python'"
    block = re.search(r"```python\n(.*?)```", section.group(1), re.S)
    assert block, "no python block under 'In Python'"
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    monkeypatch.setenv("CRM_WEBHOOK_SECRET", secret)
    namespace: dict = {"__name__": "callbacks_snippet"}
    exec(compile(block.group(1), "docs/callbacks.md", "exec"), namespace)  # noqa: S102 - the page's own code

    def deliver(body: str, webhook_id: str, *, key: str = secret, tamper: bool = False) -> int:
        """What the receiver answers to igsend's request for this body."""
        answers: list[int] = []

        def post(url: str, *, data: bytes, headers: dict, **_: object) -> SimpleNamespace:
            answers.append(namespace["handle"](data + b" " if tamper else data, headers))
            return SimpleNamespace(status_code=answers[-1], headers={}, text="")

        endpoint = Endpoint(name="crm", url="https://crm.example.com/igsend", secret=key)
        send_once(SimpleNamespace(post=post), endpoint, webhook_id, body)  # type: ignore[arg-type]
        return answers[0]

    delivered = json.dumps({"type": "message.delivered", "timestamp": "2026-12-05T20:00:00.000Z", "data": {
        "id": "job-1", "status": "delivered", "result": {"recipient_id": "r", "message_id": "aWdf1"}}})
    dead = json.dumps({"type": "message.dead", "timestamp": "2026-12-05T20:00:01.000Z", "data": {
        "id": "job-2", "status": "dead", "reason": "permanent: no matching user"}})
    assert deliver(delivered, "msg_o1-0") == 204
    assert deliver(dead, "msg_o2-0") == 204
    assert deliver(delivered, "msg_o1-0") == 204  # the retry: answered, not handled again
    assert deliver(delivered, "msg_o3-0", tamper=True) == 400
    assert deliver(delivered, "msg_o4-0", key="whsec_" + "QW5vdGhlclNlY3JldEtleTAxMjM0NQ==") == 400
    assert capsys.readouterr().out.splitlines() == ["delivered job-1 aWdf1", "dead job-2 permanent: no matching user"]
