""" Exports of BST definitions: JSON with run-time counts, and diagrams drawn by the real Graphviz
(SVG parsed as XML, PNG by its signature), with colours, size, time zone and bad options. """

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET

import pytest

from zato_plugin_bst.definitions import parse
from zato_plugin_bst.export import COLOR_KEYS, DEFAULT_COLORS, FORMATS, definition_json, diagram

from bst_fixtures import ORDERS  # noqa: E402

SVG = "{http://www.w3.org/2000/svg}"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

ROWS = [
    {"object_type": "Order", "object_id": 1, "state": "ready", "last_transition_time": "2026-12-03T08:00:00Z"},
    {"object_type": "Order", "object_id": 2, "state": "READY", "last_transition_time": "2026-12-03T09:00:00+00:00"},
    {"object_type": "Priority order", "object_id": "p-7", "state": "Sent",
     "last_transition_time": "2026-07-01T12:30:00"},
]


def orders():
    [definition] = parse(ORDERS)
    return definition


def svg_texts(data: bytes) -> list[str]:
    root = ET.fromstring(data)  # valid XML, or this raises
    assert root.tag == f"{SVG}svg"
    return ["".join(item.itertext()) for item in root.iter(f"{SVG}text")]


def node_fill(data: bytes, label: str) -> str:
    """ The fill colour of the node whose first text line is `label`. """
    for group in ET.fromstring(data).iter(f"{SVG}g"):
        if group.get("class") != "node":
            continue
        texts = ["".join(t.itertext()) for t in group.iter(f"{SVG}text")]
        if texts and texts[0] == label:
            shape = next(item for item in group if item.tag in (f"{SVG}path", f"{SVG}polygon", f"{SVG}ellipse"))
            return shape.get("fill")
    raise AssertionError(f"no node labelled {label!r}")


# ################################################################################################
# JSON


def test_json_of_the_definition():
    definition = orders()
    data = definition_json(definition)
    assert data == definition.to_dict()
    assert "counts" not in data and "items" not in data


def test_json_with_run_time_states():
    data = definition_json(orders(), states=ROWS)
    assert json.loads(json.dumps(data)) == data
    assert data["counts"] == {"New": 0, "Submitted": 0, "Ready": 2, "Sent": 1, "Confirmed": 0, "Rejected": 0,
                              "Updated": 0, "Canceled": 0, "Timed out": 0}
    assert data["total"] == 3
    assert data["latest_transition_time"] == {"Ready": "2026-12-03T09:00:00+00:00",
                                              "Sent": "2026-07-01T12:30:00+00:00"}
    assert [item["state"] for item in data["items"]] == ["Ready", "Ready", "Sent"]
    assert data["items"][2] == {"object_type": "Priority order", "object_id": "p-7", "state": "Sent",
                                "last_transition_time": "2026-07-01T12:30:00+00:00"}
    # a state the definition no longer has is counted under its own name
    other = definition_json(orders(), states=[{"object_type": "Order", "object_id": 9, "state": "Lost",
                                               "last_transition_time": None}])
    assert other["counts"]["Lost"] == 1 and other["latest_transition_time"] == {}


def test_json_bad_rows():
    with pytest.raises(ValueError) as info:
        definition_json(orders(), states=[{"object_id": 1}])
    assert "state row 1" in str(info.value) and "'state'" in str(info.value)
    with pytest.raises(ValueError) as info:
        definition_json(orders(), states=[ROWS[0], {**ROWS[1], "last_transition_time": "yesterday"}])
    assert "state row 2" in str(info.value) and "'yesterday'" in str(info.value) and "ISO 8601" in str(info.value)


# ################################################################################################
# Diagrams


def test_svg_holds_every_state():
    data = diagram(orders())
    texts = svg_texts(data)
    for state in orders().states:
        assert state in texts, state
    assert "from any state" in texts and "Force stop" in texts
    # one edge per transition, one from the entry point to each root, one to each force-stop state
    edges = [g for g in ET.fromstring(data).iter(f"{SVG}g") if g.get("class") == "edge"]
    assert len(edges) == 7 + 1 + 2
    # roots, plain and force-stop states in their default colours
    assert node_fill(data, "New") == DEFAULT_COLORS["root"]
    assert node_fill(data, "Sent") == DEFAULT_COLORS["state"]
    assert node_fill(data, "Canceled") == DEFAULT_COLORS["force_stop"]


def test_svg_of_names_xml_must_escape():
    [definition] = parse("R&D <flow>\n----------\nObjects: Idea \"A\"\nProposed: R&D review\nR&D review: <Done>\n")
    texts = svg_texts(diagram(definition))
    assert {"Proposed", "R&D review", "<Done>"} <= set(texts)
    assert "from any state" not in texts  # no force-stop states, no cluster
    [definition] = parse('Paths\n-----\nObjects: File\nC\\temp: "Quoted" end\\\n')
    assert definition.states == ("C\\temp", '"Quoted" end\\')
    texts = svg_texts(diagram(definition))
    for state in definition.states:
        assert state in texts, (state, texts)


def test_png():
    data = diagram(orders(), format="png")
    assert data.startswith(PNG_SIGNATURE)
    assert diagram(orders(), format="PNG").startswith(PNG_SIGNATURE)


def test_colors():
    colors = {"state": "#102030", "root": "darkgreen", "force_stop": "#a0b0c0", "edge": "#ff0000",
              "current": "gold"}
    data = diagram(orders(), colors=colors, states=ROWS)
    assert node_fill(data, "New") == "darkgreen"
    assert node_fill(data, "Submitted") == "#102030"
    assert node_fill(data, "Timed out") == "#a0b0c0"
    assert node_fill(data, "Ready") == "gold" and node_fill(data, "Sent") == "gold"  # objects are there
    edge_paths = [p for g in ET.fromstring(data).iter(f"{SVG}g") if g.get("class") == "edge"
                  for p in g.iter(f"{SVG}path")]
    assert edge_paths and {p.get("stroke") for p in edge_paths} == {"#ff0000"}
    # only the keys given change
    data = diagram(orders(), colors={"edge": "blue"})
    assert node_fill(data, "New") == DEFAULT_COLORS["root"]


def test_size():
    wide = ET.fromstring(diagram(orders()))
    small = ET.fromstring(diagram(orders(), size="3,2"))

    def points(value: str) -> float:
        return float(re.match(r"[\d.]+", value).group())

    assert points(small.get("width")) <= 3 * 72 + 1 and points(small.get("height")) <= 2 * 72 + 1
    assert points(wide.get("width")) > points(small.get("width"))


def test_counts_and_time_zone():
    texts = svg_texts(diagram(orders(), states=ROWS, tz="Europe/Warsaw"))
    joined = "\n".join(texts)
    assert "2 objects" in texts and "1 object" in texts and "0 objects" in texts
    assert "latest 2026-12-03 10:00:00 CET" in texts  # 09:00 UTC, the later of Ready's two
    assert "latest 2026-07-01 14:30:00 CEST" in texts  # a time without offset is UTC
    assert "Europe/Warsaw" in joined
    texts = svg_texts(diagram(orders(), states=ROWS, tz="America/New_York"))
    assert "latest 2026-12-03 04:00:00 EST" in texts
    texts = svg_texts(diagram(orders(), states=ROWS))
    assert "latest 2026-12-03 09:00:00 UTC" in texts


@pytest.mark.parametrize("options, words", [
    ({"format": "pdf"}, ["'pdf'", ", ".join(FORMATS)]),
    ({"colors": {"background": "red"}}, ["'background'", ", ".join(COLOR_KEYS)]),
    ({"colors": {"edge": "#12345"}}, ["colors['edge']", "'#12345'", "#rrggbb"]),
    ({"colors": {"root": "rgb(1,2,3)"}}, ["colors['root']", "#rrggbb", "colour name"]),
    ({"colors": {"state": "notacolour"}}, ["colors['state']", "'notacolour'", "not a Graphviz colour name"]),
    ({"colors": {"current": 12}}, ["colors['current']", "12"]),
    ({"tz": "Mars/Olympus_Mons"}, ["'Mars/Olympus_Mons'", "time zone", "Europe/Warsaw"]),
    ({"tz": "../etc/passwd"}, ["'../etc/passwd'", "time zone"]),
    ({"size": "big"}, ["'big'", "'8,5'"]),
    ({"size": "8,5,3"}, ["'8,5,3'", "inches"]),
])
def test_bad_options(options, words):
    with pytest.raises(ValueError) as info:
        diagram(orders(), **options)
    for word in words:
        assert word in str(info.value), str(info.value)


def test_graphviz_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no `dot` there
    with pytest.raises(RuntimeError) as info:
        diagram(orders())
    assert "apt-get install graphviz" in str(info.value)
