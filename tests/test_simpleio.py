""" SimpleIO declarations: conversions, name-based types, every bad field reported, output checks. """

from __future__ import annotations

import datetime as dt
import decimal
import uuid

import pytest

from zato.server.service import AsIs, Bool, Date, DateTime, Decimal, Dict, Float, Int, List, Opaque, Text, UUID
from zato.server.service.simpleio import InputError, OutputError, SIODefinition


def sio(**declaration) -> SIODefinition:
    return SIODefinition(type("SimpleIO", (), declaration))


def test_every_type_converts_its_input():
    definition = sio(input_required=(AsIs("a"), Bool("b"), Int("c"), Float("d"), Decimal("e"), Date("f"),
                                     DateTime("g"), Dict("h"), List("i"), Text("j"), UUID("k"), Opaque("l")))
    value = uuid.uuid4()
    result = definition.parse_input([{
        "a": {"x": 1}, "b": "yes", "c": "42", "d": "1.5", "e": "0.10", "f": "2026-11-21", "g": "2026-11-21T10:00:00Z",
        "h": {"k": "v"}, "i": [1, 2], "j": 12, "k": str(value), "l": [1],
    }])
    assert result.a == {"x": 1} and result.b is True and result.c == 42 and result.d == 1.5
    assert result.e == decimal.Decimal("0.10") and result.f == dt.date(2026, 11, 21)
    assert result.g == dt.datetime(2026, 11, 21, 10, tzinfo=dt.timezone.utc)
    assert result.h.k == "v" and result.i == [1, 2] and result.j == "12" and result.k == value and result.l == [1]


def test_plain_names_take_their_type_from_the_name_as_in_zato():
    definition = sio(input_required=("user_id", "is_active", "has_email", "id", "name", "retry_count"))
    result = definition.parse_input([{"user_id": "7", "is_active": "false", "has_email": 1, "id": 3, "name": 5,
                                      "retry_count": "2"}])
    assert result == {"user_id": 7, "is_active": False, "has_email": True, "id": 3, "name": "5", "retry_count": 2}


def test_every_bad_field_is_reported_at_once():
    definition = sio(input_required=(Int("age"), "email", Date("born"), Bool("is_admin")))
    with pytest.raises(InputError) as info:
        definition.parse_input([{"age": "old", "born": "yesterday", "is_admin": "perhaps"}])
    errors = {e["name"]: e["error"] for e in info.value.errors}
    assert set(errors) == {"age", "email", "born", "is_admin"}
    assert "expected an integer" in errors["age"] and "missing" in errors["email"]
    assert "YYYY-MM-DD" in errors["born"] and "true or false" in errors["is_admin"]
    assert "age: expected an integer" in str(info.value)


def test_booleans_are_not_integers():
    with pytest.raises(InputError, match="expected an integer, got a boolean"):
        sio(input_required=(Int("n"),)).parse_input([{"n": True}])


def test_optional_elements_get_their_defaults():
    definition = sio(input_optional=(Int("limit", default=10), "name", Bool("is_x")), default_input_value="N/A")
    assert definition.parse_input([{}]) == {"limit": 10, "name": "N/A", "is_x": "N/A"}
    assert definition.parse_input([{"limit": "3", "name": None}]) == {"limit": 3, "name": None, "is_x": "N/A"}


def test_later_sources_win():
    definition = sio(input_required=("a", "b", "c"))
    assert definition.parse_input([{"a": "path", "b": "path"}, {"b": "query", "c": "query"}, {"c": "body"}]) == \
        {"a": "path", "b": "query", "c": "body"}


def test_a_single_string_declaration_is_one_element():
    assert sio(input_required="file_name").parse_input([{"file_name": "x"}]) == {"file_name": "x"}


def test_output_is_checked_converted_and_limited_to_declared_elements():
    definition = sio(output_required=("user_id", DateTime("seen")), output_optional=(Decimal("balance"), "note"))
    payload = {"user_id": "5", "seen": dt.datetime(2026, 1, 2, 3, 4), "balance": decimal.Decimal("1.10"),
               "password": "never returned"}
    assert definition.check_output(payload) == {"user_id": 5, "seen": "2026-01-02T03:04:00", "balance": "1.10"}


def test_output_lists_and_objects():
    definition = sio(output_required=("name",))

    class Row:
        def __init__(self, name):
            self.name = name

    assert definition.check_output([{"name": "a"}, Row("b")]) == [{"name": "a"}, {"name": "b"}]
    with pytest.raises(OutputError) as info:
        definition.check_output([{"name": "a"}, {}])
    assert info.value.errors == [{"name": "[1].name", "error": "missing (it is required)"}]


def test_missing_required_output_is_an_error():
    with pytest.raises(OutputError, match="user_id: missing"):
        sio(output_required=("user_id",)).check_output({"other": 1})


def test_bad_declaration_is_a_clear_error():
    with pytest.raises(TypeError, match="SimpleIO element must be a name"):
        sio(input_required=(1,))


def test_text_keeps_binary_data_as_bytes():
    definition = sio(input_required=("data",))
    assert definition.parse_input([{"data": b"%PDF-\x00\xff"}]) == {"data": b"%PDF-\x00\xff"}
