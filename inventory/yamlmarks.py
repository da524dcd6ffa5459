"""YAML reading that remembers line numbers and refuses duplicate keys.

PyYAML (libyaml's C loader when present, for speed) builds plain dicts and lists; this module's
loader builds `MarkedDict`/`MarkedList` instead, which carry the 1-based line of the node and of
each key, so later validation can say `file:line: field: message`. A key given twice in one
mapping (two hosts with the same name, say) is an error here, where PyYAML would silently keep
the last one. Only YAML's safe tags are accepted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from inventory.errors import InventoryError

_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # type: ignore[assignment]


class MarkedDict(dict):  # type: ignore[type-arg]
    """A dict from YAML with `line` (of the mapping) and `key_lines` (key → line of that key)."""

    line: int | None = None
    key_lines: dict[Any, int]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.key_lines = {}


class MarkedList(list):  # type: ignore[type-arg]
    """A list from YAML with `line` (of the sequence) and `item_lines` (index → line)."""

    line: int | None = None
    item_lines: list[int]

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.item_lines = []


class _MarkingLoader(_BaseLoader):  # type: ignore[misc, valid-type]
    """Safe loader whose mappings and sequences remember where they came from."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> MarkedDict:
    loader.flatten_mapping(node)
    result = MarkedDict()
    result.line = node.start_mark.line + 1
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        try:
            hash(key)
        except TypeError:
            raise InventoryError("a mapping key must be a plain value, not a list or mapping", line=line) from None
        if key in result:
            raise InventoryError(
                f"key {key!r} appears twice in this mapping (first on line {result.key_lines[key]})", line=line
            )
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = line
    return result


def _construct_sequence(loader: yaml.SafeLoader, node: yaml.SequenceNode) -> MarkedList:
    result = MarkedList(loader.construct_object(child, deep=True) for child in node.value)
    result.line = node.start_mark.line + 1
    result.item_lines = [child.start_mark.line + 1 for child in node.value]
    return result


_MarkingLoader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)
_MarkingLoader.add_constructor("tag:yaml.org,2002:seq", _construct_sequence)


def load_yaml_text(text: str, file: Path | None) -> Any:
    """Parse YAML `text` into MarkedDict/MarkedList/scalars.

    Raises InventoryError (with the file and the line of the problem) on any YAML error. The
    message carries PyYAML's problem description but never the offending line's text, which may
    hold a password.
    """
    try:
        return yaml.load(text, Loader=_MarkingLoader)  # noqa: S506 - _MarkingLoader derives from SafeLoader
    except InventoryError as exc:
        raise InventoryError(exc.message, file=file, line=exc.line, field=exc.field) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        raise InventoryError(f"YAML syntax error: {problem}", file=file, line=mark.line + 1 if mark else None) from None
    except yaml.YAMLError as exc:
        raise InventoryError(f"YAML error: {type(exc).__name__}", file=file) from None
    except (RecursionError, MemoryError):
        raise InventoryError("YAML nesting is too deep", file=file) from None
    except (ValueError, OverflowError, TypeError) as exc:
        # PyYAML's own scalar constructors raise these on e.g. out-of-range timestamps.
        raise InventoryError(f"YAML value cannot be read ({type(exc).__name__})", file=file) from None


def read_text(path: Path) -> str:
    """Read an inventory file as UTF-8 (BOM allowed); InventoryError when unreadable or not text."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InventoryError(f"cannot read file: {exc.strerror or exc}", file=path) from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InventoryError(f"not UTF-8 text (byte {exc.start})", file=path) from None
