""" Exports of BST definitions: JSON (the definition and, optionally, where objects are now) and
diagrams drawn by Graphviz (SVG or PNG).

Run-time state rows, where given, are `{"object_type", "object_id", "state",
"last_transition_time"}` with the time in ISO 8601 (UTC when it has no offset).
"""

from __future__ import annotations

import re
import subprocess
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from zato_plugin_bst.definitions import Definition

FORMATS = ("svg", "png")
COLOR_KEYS = ("state", "root", "force_stop", "edge", "current")
DEFAULT_COLORS = {"state": "#dce6f2", "root": "#b7e1a1", "force_stop": "#f4b6b6", "edge": "#444444",
                  "current": "#ffd966"}
_HEX = re.compile(r"#[0-9a-fA-F]{6}\Z")
_NAME = re.compile(r"[a-zA-Z][a-zA-Z0-9]{0,39}\Z")
_SIZE = re.compile(r"\d+(\.\d+)?(,\d+(\.\d+)?)?!?\Z")
_known_colors: dict[str, bool] = {}
INSTALL = "install Graphviz, whose `dot` program draws the diagrams (apt-get install graphviz)"


# ################################################################################################
# Run-time rows


def _time(value: Any, where: str) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"{where}: last_transition_time {value!r} is not an ISO 8601 time, e.g. "
                             f"'2026-12-03T09:30:00+00:00'") from None
    else:
        raise ValueError(f"{where}: last_transition_time must be an ISO 8601 text, not {type(value).__name__}")
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment


def _summary(definition: Definition, states: Iterable[Mapping[str, Any]]) -> tuple[
        dict[str, int], dict[str, datetime], list[dict[str, Any]]]:
    """ Objects per state (every state of the definition, then states it does not have), the latest
    transition time per state, and the rows with state names in the definition's spelling. """
    counts = {state: 0 for state in definition.states}
    latest: dict[str, datetime] = {}
    rows: list[dict[str, Any]] = []
    for number, row in enumerate(states, 1):
        if not isinstance(row, Mapping) or "state" not in row:
            raise ValueError(f"state row {number} must be a mapping with at least 'state' (and object_type, "
                             f"object_id, last_transition_time), not {row!r}")
        raw = row.get("state")
        state = definition.state(raw) or (str(raw) if raw is not None else "(none)")
        counts[state] = counts.get(state, 0) + 1
        moment = _time(row.get("last_transition_time"), f"state row {number}")
        if moment is not None and (state not in latest or moment > latest[state]):
            latest[state] = moment
        rows.append({"object_type": row.get("object_type"), "object_id": row.get("object_id"), "state": state,
                     "last_transition_time": moment.astimezone(timezone.utc).isoformat() if moment else None})
    return counts, latest, rows


def definition_json(definition: Definition, states: list[dict] | None = None) -> dict[str, Any]:
    """ The definition (`Definition.to_dict`) and, with `states`, `counts` (objects per state,
    zero included), `latest_transition_time` per state (ISO, UTC), `total` and `items` (the
    rows, state names in the definition's spelling, times in UTC). """
    out = definition.to_dict()
    if states is not None:
        counts, latest, rows = _summary(definition, states)
        out["counts"] = counts
        out["latest_transition_time"] = {state: moment.astimezone(timezone.utc).isoformat()
                                         for state, moment in latest.items()}
        out["total"] = len(rows)
        out["items"] = rows
    return out


# ################################################################################################
# Diagrams


def _check_colors(colors: Mapping[str, Any] | None) -> dict[str, str]:
    chosen = dict(DEFAULT_COLORS)
    if colors is None:
        return chosen
    if not isinstance(colors, Mapping):
        raise ValueError(f"colors must be a mapping of {', '.join(COLOR_KEYS)} to colours, not {colors!r}")
    names = []
    for key, value in colors.items():
        if key not in COLOR_KEYS:
            raise ValueError(f"colors: unknown key {key!r}; the keys are {', '.join(COLOR_KEYS)}")
        if not isinstance(value, str) or not (_HEX.match(value) or _NAME.match(value)):
            raise ValueError(f"colors[{key!r}]: {value!r} is not a colour; give #rrggbb (e.g. '#1f77b4') or a "
                             f"Graphviz colour name (e.g. 'lightblue')")
        if _NAME.match(value):
            names.append((key, value))
        chosen[key] = value
    unknown = _unknown_color_names([value for _, value in names])
    for key, value in names:
        if value.lower() in unknown:
            raise ValueError(f"colors[{key!r}]: {value!r} is not a Graphviz colour name; give #rrggbb (e.g. "
                             f"'#1f77b4') or a name Graphviz knows (e.g. 'lightblue', 'gray80', see "
                             f"https://graphviz.org/doc/info/colors.html)")
    return chosen


def _unknown_color_names(names: list[str]) -> set[str]:
    """ The names Graphviz does not know (lower case), asking `dot` itself once per name. """
    wanted = sorted({name.lower() for name in names} - set(_known_colors))
    if wanted:
        nodes = "".join(f'n{i} [color="{name}"];' for i, name in enumerate(wanted))
        try:
            done = subprocess.run(["dot", "-Tcanon"], input=f"digraph {{{nodes}}}".encode(), capture_output=True,
                                  timeout=30)
        except FileNotFoundError:
            raise RuntimeError(f"Graphviz's `dot` program was not found: {INSTALL}") from None
        warnings = done.stderr.decode("utf-8", "replace").lower()
        for name in wanted:
            _known_colors[name] = f"{name} is not a known color" not in warnings
    return {name.lower() for name in names if not _known_colors[name.lower()]}


def _zone(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ValueError(f"unknown time zone {tz!r}; give an IANA name such as 'UTC', 'Europe/Warsaw' or "
                         f"'America/New_York'") from None


def _label(*parts: str) -> str:
    """ Lines of a label, as text even where they look like Graphviz's HTML labels (`<Done>`). """
    import graphviz
    return graphviz.nohtml("\\n".join(part.replace("\\", "\\\\") for part in parts))


def diagram(definition: Definition, *, format: str = "svg", colors: dict | None = None, size: str | None = None,
            tz: str = "UTC", states: list[dict] | None = None) -> bytes:
    """ The definition drawn by Graphviz as SVG or PNG bytes: a node per state (roots green with
    an entry arrow, final states with a double border, force-stop states red in a cluster reached
    "from any state"), an edge per transition. With `states` (run-time rows), each node says
    how many objects are in it and when the latest of them got there, in `tz`; states holding
    objects are filled with `colors["current"]`. Raises ValueError for a bad option, naming it and
    what is accepted, and RuntimeError when Graphviz is not installed. """
    import graphviz

    if not isinstance(format, str) or format.lower() not in FORMATS:
        raise ValueError(f"unknown diagram format {format!r}; the formats are: {', '.join(FORMATS)}")
    format = format.lower()
    chosen = _check_colors(colors)
    if size is not None and (not isinstance(size, str) or not _SIZE.match(size.strip())):
        raise ValueError(f"size {size!r} is not width,height in inches, e.g. '8,5' (or one number, '8'; a "
                         f"trailing '!' scales up to it)")
    zone = _zone(tz)
    counts, latest = ({}, {}) if states is None else _summary(definition, states)[:2]

    graph = graphviz.Digraph(name=definition.name, format=format)
    graph.attr(rankdir="LR", label=_label(f"{definition.name} ({', '.join(definition.objects)})"
                                          + (f" - times in {tz}" if states is not None else "")),
               labelloc="t", fontname="Helvetica")
    if size is not None:
        graph.attr(size=size.strip())
    graph.attr("node", shape="box", style="rounded,filled", fontname="Helvetica", color="#333333")
    graph.attr("edge", color=chosen["edge"], fontname="Helvetica")

    ids = {state.lower(): f"s{index}" for index, state in enumerate(definition.states)}
    finals = {state.lower() for state in definition.states} - set(definition.transitions) - set(definition.force_stop)

    def node(target: Any, state: str) -> None:
        key = state.lower()
        parts = [state]
        fill = chosen["root"] if key in definition.roots else (
            chosen["force_stop"] if key in definition.force_stop else chosen["state"])
        if states is not None:
            count = counts.get(state, 0)
            parts.append(f"{count} object{'' if count == 1 else 's'}")
            if state in latest:
                parts.append("latest " + latest[state].astimezone(zone).strftime("%Y-%m-%d %H:%M:%S %Z"))
            if count:
                fill = chosen["current"]
        extra = {"peripheries": "2"} if key in finals else {}
        if key in definition.roots:
            extra["penwidth"] = "2"
        target.node(ids[key], label=_label(*parts), fillcolor=fill, **extra)

    graph.node("start", label="", shape="point", width="0.15", style="filled", fillcolor="black")
    for state in definition.states:
        if state.lower() not in definition.force_stop:
            node(graph, state)
    for root in definition.roots:
        graph.edge("start", ids[root])
    for old, nexts in definition.transitions.items():
        for new in nexts:
            graph.edge(ids[old], ids[new])
    if definition.force_stop:
        with graph.subgraph(name="cluster_force_stop") as cluster:
            cluster.attr(label="Force stop", style="dashed", color=chosen["force_stop"], fontname="Helvetica")
            cluster.node("any", label="from any state", shape="note", style="filled", fillcolor="white")
            for state in definition.force_stop:
                node(cluster, definition.state(state) or state)
                cluster.edge("any", ids[state], style="dashed")
    try:
        return graph.pipe(format=format)
    except graphviz.ExecutableNotFound:
        raise RuntimeError(f"Graphviz's `dot` program was not found, so no {format} diagram can be drawn: "
                           f"{INSTALL}") from None
