"""to_response: what handlers may return, including values straight from database rows."""
from decimal import Decimal

import pytest

from fiberapp.http.response import to_response


def test_database_types_encode():
    # numeric columns arrive as Decimal: every digit kept, as a string; sets as lists
    resp = to_response({"price": Decimal("10.10"), "tags": {"a"}})
    assert resp.json_body() == {"price": "10.10", "tags": ["a"]}


def test_unencodable_value_is_a_type_error():
    with pytest.raises(TypeError):
        to_response({"x": object()})
