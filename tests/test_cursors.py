"""The page-cursor codec (``bulkjobs/cursors.py``) as pure functions.  No services."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from bulkjobs import cursors
from bulkjobs.errors import BadRequest, SelectionError


def b64(value: Any, *, pad: bool = False) -> str:
    text = base64.urlsafe_b64encode(json.dumps(value, allow_nan=True).encode()).decode()
    return text if pad else text.rstrip("=")


@pytest.mark.parametrize(("values", "shape"), [
    ([0], (int,)),
    ([2**63 - 1], (int,)),
    (["get-0000abcd-0123456789abcdef0123", 17, 4000], (str, int, int)),
    ([1613565541.4195538, "job-token"], (float, str)),
    ([1613565541.0, "x"], (float, str)),
    (["ünïcödé ✓", 1], (str, int)),
])
def test_a_cursor_decodes_to_the_values_it_was_made_from(values, shape):
    """``decode(encode(v), shape)`` gives ``v`` back, whatever the values."""
    cursor = cursors.encode(values)
    assert "=" not in cursor and cursor.isascii()
    assert cursors.decode(cursor, shape) == tuple(values)


@pytest.mark.parametrize("cursor", [
    "", "%%%", "!!!!", "=" * 10, "a", b64("[" * 60)[:-2],
    base64.urlsafe_b64encode(b"\xff\xfe").decode(),
    base64.urlsafe_b64encode(b"[" * 100_000).decode(),  # deeper than the JSON parser goes
    b64(None), b64({"a": 1}), b64([1, "x", 2]), b64(["x"]), b64([]), b64("x"),
    b64([True, "x"]), b64(["1.5", "x"]), b64([1.5, 2]), b64([1, None]),
])
def test_anything_else_is_an_invalid_page_cursor(cursor):
    """Bad base64, bad JSON, another shape or another type: ``BadRequest`` unless told
    otherwise, with the one message ``invalid page.cursor``."""
    with pytest.raises(BadRequest, match="^invalid page.cursor$"):
        cursors.decode(cursor, (float, str))
    with pytest.raises(SelectionError) as caught:
        cursors.decode(cursor, (float, str), error=SelectionError)
    assert caught.value.reason == cursors.INVALID


def test_a_float_may_be_written_as_an_integer_and_padding_is_optional():
    """An integral time decodes as a float; a padded cursor (as ``jobs/list`` made them)
    decodes as the unpadded one does."""
    assert cursors.decode(b64([1613565541, "t"], pad=True), (float, str)) == (1613565541.0, "t")
    assert isinstance(cursors.decode(b64([5, "t"]), (float, str))[0], float)
    with pytest.raises(BadRequest):
        cursors.decode(b64([5.0]), (int,))
