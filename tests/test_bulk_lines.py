"""Reading a bulk file's lines: every bad line becomes that line's error, never an exception."""

from __future__ import annotations

import io

from producers.bulk import _lines


def test_bad_lines_are_reported_with_their_number() -> None:
    data = b'{"kind": "text"}\n{not json\n\n\xff\n[' + b"1" * 5000 + b"]\n"
    lines = list(_lines(io.BytesIO(data)))
    assert lines[0] == (1, {"kind": "text"}, None)
    assert lines[1][0] == 2 and lines[1][2] is not None and lines[1][2].startswith("not valid JSON (Expecting")
    assert lines[2][0] == 4 and lines[2][2] is not None and lines[2][2].startswith("not valid UTF-8")
    # a 5000-digit number is well-formed JSON that Python refuses to convert: an error for its line too
    assert lines[3][0] == 5 and lines[3][2] is not None and lines[3][2].startswith("not valid JSON")
    assert len(lines) == 4
