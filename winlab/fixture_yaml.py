"""Fixture YAML with line numbers: one home for YAML-with-marks, `inventory.yamlmarks`.

`parse_yaml` loads the text with the inventory's marking loader (safe tags only, a key given
twice in one mapping is an error) and flattens its `MarkedDict.key_lines` /
`MarkedList.item_lines` into the `(path tuple) → line` map that `FixtureError`s are located
with. Inventory errors become `FixtureError`s naming the fixture file.
"""

from __future__ import annotations

from typing import Any

from inventory.errors import InventoryError
from inventory.yamlmarks import MarkedDict, MarkedList, load_yaml_text
from winlab.fixture_errors import FixtureError

Marks = dict[tuple[Any, ...], int]


def _collect(value: Any, path: tuple[Any, ...], out: Marks) -> None:
    if isinstance(value, MarkedDict):
        if value.line is not None:
            out.setdefault(path, value.line)
        for k, v in value.items():
            line = value.key_lines.get(k)
            if line is not None:
                out[(*path, k)] = line
            _collect(v, (*path, k), out)
    elif isinstance(value, MarkedList):
        if value.line is not None:
            out.setdefault(path, value.line)
        for i, v in enumerate(value):
            if i < len(value.item_lines):
                out[(*path, i)] = value.item_lines[i]
            _collect(v, (*path, i), out)


def parse_yaml(text: str, source: str) -> tuple[Any, Marks]:
    """(data, marks) of fixture text; data holds dict/list subclasses that validate as plain ones.
    Raises FixtureError(source, line, "", "YAML: …") for a syntax error or a duplicate key."""
    try:
        data = load_yaml_text(text, None)
    except InventoryError as exc:
        raise FixtureError(source, exc.line, exc.field or "", f"YAML: {exc.message}") from exc
    marks: Marks = {}
    _collect(data, (), marks)
    return data, marks
