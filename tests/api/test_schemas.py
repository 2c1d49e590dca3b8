"""Request validation: every field type, its bounds, and the errors that name the field."""
import pytest

from fiberapp.api import schemas
from fiberapp.api.errors import InvalidField, InvalidJson, MissingField, UnknownField


def test_put_accepts_every_field_and_converts_durations_to_float():
    body = schemas.PUT.validate({"data": {"x": 1}, "pri": 3, "ttl": 10, "ttr": 0.5, "delay": 0,
                                 "utube": "u", "key": "k"})
    assert body == {"data": {"x": 1}, "pri": 3, "ttl": 10.0, "ttr": 0.5, "delay": 0.0,
                    "utube": "u", "key": "k"}
    assert isinstance(body["ttl"], float)


def test_null_data_is_data_but_null_options_mean_default():
    assert schemas.PUT.validate({"data": None, "ttl": None}) == {"data": None}


@pytest.mark.parametrize("field,value", [
    ("ttl", -1), ("ttl", True), ("ttl", "10"), ("ttl", schemas.MAX_DURATION * 2),
    ("pri", 1.5), ("pri", -1), ("pri", False), ("pri", 2**40),
    ("utube", 5), ("utube", ""), ("key", "k" * 201),
])
def test_bad_values_name_their_field(field, value):
    with pytest.raises(InvalidField) as info:
        schemas.PUT.validate({"data": 1, field: value})
    assert info.value.field == field
    assert info.value.code == "invalid_field" and info.value.status == 400


def test_unknown_field_is_refused_not_ignored():
    with pytest.raises(UnknownField) as info:
        schemas.PUT.validate({"data": 1, "prio": 1})
    assert "prio" in info.value.message and info.value.status == 400


def test_body_must_be_an_object():
    for body in ([1, 2], "x", 3):
        with pytest.raises(InvalidJson):
            schemas.TAKE.validate(body)
    assert schemas.TAKE.validate(None) == {}


def test_batch_items_are_validated_with_their_index_in_the_name():
    ok = schemas.PUT.validate({"tasks": [{"data": 1}, {"data": 2, "pri": 1}]})
    assert ok["tasks"] == [{"data": 1}, {"data": 2, "pri": 1}]
    with pytest.raises(InvalidField) as info:
        schemas.PUT.validate({"tasks": [{"data": 1}, {"data": 2, "ttl": -3}]})
    assert info.value.field == "tasks[1].ttl"
    with pytest.raises(UnknownField) as info:
        schemas.PUT.validate({"tasks": [{"data": 1, "nope": 1}]})
    assert "tasks[0].nope" in info.value.message
    with pytest.raises(InvalidField):
        schemas.PUT.validate({"tasks": []})
    with pytest.raises(InvalidField):
        schemas.PUT.validate({"tasks": [{"data": 1}] * (schemas.MAX_BATCH + 1)})


def test_data_nesting_is_bounded_without_recursion():
    deep = 1
    for _ in range(schemas.MAX_DATA_DEPTH):
        deep = [deep]
    assert schemas.PUT.validate({"data": deep})["data"] == deep
    with pytest.raises(InvalidField):
        schemas.PUT.validate({"data": [deep]})
    very_deep = {}
    for _ in range(100_000):  # a recursive check would overflow the stack here
        very_deep = {"a": very_deep}
    with pytest.raises(InvalidField):
        schemas.PUT.validate({"data": very_deep})


def test_required_fields():
    with pytest.raises(MissingField) as info:
        schemas.TOUCH.validate({})
    assert info.value.field == "delta"
    with pytest.raises(InvalidField):
        schemas.TOUCH.validate({"delta": 0})
    assert schemas.KICK.validate({}) == {"count": 1}
    with pytest.raises(MissingField):
        schemas.TAKE_ANY.validate({"timeout": 1})


def test_take_any_tube_list():
    assert schemas.TAKE_ANY.validate({"tubes": ["a", "b"]}) == {"tubes": ["a", "b"]}
    for bad in ([], ["a", 1], "a", ["x" * 201]):
        with pytest.raises(InvalidField):
            schemas.TAKE_ANY.validate({"tubes": bad})


def test_query_args_parse_integers_and_check_enums():
    assert schemas.query_args(schemas.LIST_QUERY, {"state": "ready", "limit": "5"}) == {"state": "ready", "limit": 5}
    assert schemas.query_args(schemas.LIST_QUERY, {}) == {"limit": 100}
    for raw in ({"limit": "x"}, {"limit": "0"}, {"limit": "9" * 5000}, {"state": "gone"}):
        with pytest.raises(InvalidField):
            schemas.query_args(schemas.LIST_QUERY, raw)
    with pytest.raises(UnknownField):
        schemas.query_args(schemas.LIST_QUERY, {"offset": "1"})


def test_json_schema_states_the_same_rules():
    js = schemas.PUT.json_schema()
    assert js["additionalProperties"] is False
    assert js["properties"]["ttl"] == {"type": "number", "minimum": 0, "maximum": schemas.MAX_DURATION,
                                       "description": js["properties"]["ttl"]["description"]}
    assert js["properties"]["tasks"]["items"]["additionalProperties"] is False
    assert schemas.TOUCH.json_schema()["required"] == ["delta"]
    assert schemas.TOUCH.json_schema()["properties"]["delta"]["exclusiveMinimum"] == 0


def test_a_repeated_body_is_answered_from_the_last_validation_without_sharing_its_dict(env):
    from fiberapp.api import schemas
    from fiberapp.http.request import Request

    api = env.api
    first = api.body(Request.build("POST", "/x", body=b'{"timeout": 2.5}'), schemas.TAKE)
    again = api.body(Request.build("POST", "/x", body=b'{"timeout": 2.5}'), schemas.TAKE)
    assert first == again == {"timeout": 2.5}
    again["timeout"] = 99.0  # a handler changing its copy changes nothing remembered
    assert api.body(Request.build("POST", "/x", body=b'{"timeout": 2.5}'), schemas.TAKE) == {"timeout": 2.5}
    # the same bytes under another schema are validated for that schema
    with pytest.raises(Exception) as info:
        api.body(Request.build("POST", "/x", body=b'{"timeout": 2.5}'), schemas.TOUCH)
    assert getattr(info.value, "status", None) == 400
    # a body with a container is never remembered (its list could be changed in place)
    body = b'{"tubes": ["a", "b"], "timeout": 1}'
    one = api.body(Request.build("POST", "/x", body=body), schemas.TAKE_ANY)
    one["tubes"].append("c")
    assert api.body(Request.build("POST", "/x", body=body), schemas.TAKE_ANY)["tubes"] == ["a", "b"]
