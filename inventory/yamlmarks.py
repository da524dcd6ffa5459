"""YAML reading that remembers line numbers and refuses duplicate keys.

PyYAML (libyaml's C loader when present, for speed) builds plain dicts and lists; this module's
loader builds `MarkedDict`/`MarkedList` instead, which carry the 1-based line of the node and of
each key, so later validation can say `file:line: field: message`. A key given twice in one
mapping (two hosts with the same name, say) is an error here, where PyYAML would silently keep
the last one. Only YAML's safe tags are accepted, plus Ansible's `!vault` (kept encrypted as `VaultText`)
and `!unsafe` (`UnsafeText`, never templated). Alias bombs and deep nesting are refused before
anything is built (`inventory.safeyaml`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from inventory.errors import InventoryError
from inventory.safeyaml import YamlLimitError, check_limits, guarded_events
from inventory.vault import UnsafeText, VaultText

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


def _construct_vault(loader: yaml.SafeLoader, node: yaml.Node) -> VaultText:
    """Ansible's `!vault` tag (ansible-core `AnsibleConstructor.construct_vault_encrypted_unicode`):
    the scalar is a vault envelope, decrypted later by `inventory.vault_secrets`."""
    if not isinstance(node, yaml.ScalarNode):
        raise InventoryError("a !vault value must be a string (the vault envelope)", line=node.start_mark.line + 1)
    text = VaultText(loader.construct_scalar(node))
    text.line = node.start_mark.line + 1
    return text


_MarkingLoader.add_constructor("!vault", _construct_vault)


def _construct_unsafe(loader: yaml.SafeLoader, node: yaml.Node) -> UnsafeText:
    """Ansible's `!unsafe` tag: the string is never templated (ansible-core `construct_unsafe`)."""
    if not isinstance(node, yaml.ScalarNode):
        raise InventoryError("kbfix accepts !unsafe on strings only", line=node.start_mark.line + 1)
    return UnsafeText(loader.construct_scalar(node))


_MarkingLoader.add_constructor("!unsafe", _construct_unsafe)


# ------------------------------------------------------------------ fast path: built from events
# libyaml's parser emits events quickly, but PyYAML's composer/constructor then spend most of a
# load in Python (a Node object and a resolver call per scalar). Building MarkedDict/MarkedList
# straight from the events, with PyYAML's own implicit resolvers and scalar constructors, is
# several times faster on a 10,000-host file. Anything unusual (merge keys `<<`, explicit tags
# other than the core scalar ones, several documents) falls back to the loader above, so the
# result is always what SafeLoader would build.

_STR = "tag:yaml.org,2002:str"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_SCALAR_TAGS = frozenset({_STR, "tag:yaml.org,2002:int", "tag:yaml.org,2002:float", "tag:yaml.org,2002:bool",
                          "tag:yaml.org,2002:null", "tag:yaml.org,2002:timestamp"})
_RESOLVERS: dict[Any, list[tuple[str, Any]]] = yaml.resolver.Resolver.yaml_implicit_resolvers
_CONSTRUCTOR = yaml.constructor.SafeConstructor()


class _Fallback(Exception):
    """The fast path met a YAML feature it leaves to PyYAML's full loader."""


def _scalar(event: yaml.ScalarEvent) -> Any:
    tag = event.tag
    value = event.value
    if tag is None or tag == "!":
        if not event.implicit[0]:
            return value  # quoted: a string (PyYAML's composer resolves `!` like an untagged node)
        tag = _STR
        for candidate, regexp in _RESOLVERS.get(value[0] if value else "", ()):
            if regexp.match(value):
                tag = candidate
                break
        if tag == _STR:
            return value
    if tag == _STR:
        return value
    if tag not in _SCALAR_TAGS:
        raise _Fallback(tag)
    return _CONSTRUCTOR.yaml_constructors[tag](_CONSTRUCTOR, yaml.ScalarNode(tag, value))


def _load_events(text: str) -> Any:
    """Build the document from libyaml events; raises _Fallback for features left to PyYAML."""
    anchors: dict[str, Any] = {}
    open_anchors: set[str] = set()
    # Each frame: [container, anchor, pending key (mappings), key line, awaiting-key flag]
    stack: list[list[Any]] = []
    root: Any = None
    documents = 0

    def attach(value: Any, line: int) -> None:
        nonlocal root
        if not stack:
            root = value
            return
        frame = stack[-1]
        container = frame[0]
        if isinstance(container, MarkedList):
            container.append(value)
            container.item_lines.append(line)
        elif frame[4]:  # this value is a key
            try:
                hash(value)
            except TypeError:
                raise InventoryError("a mapping key must be a plain value, not a list or mapping", line=line) from None
            if value in container:
                raise InventoryError(
                    f"key {value!r} appears twice in this mapping (first on line {container.key_lines[value]})",
                    line=line,
                )
            frame[2], frame[3], frame[4] = value, line, False
        else:
            container[frame[2]] = value
            container.key_lines[frame[2]] = frame[3]
            frame[4] = True

    event: Any  # PyYAML's stubs type events as the base Event; each branch knows its class
    for event in guarded_events(text):
        cls = type(event)
        if cls is yaml.ScalarEvent:
            line = event.start_mark.line + 1
            value = _scalar(event)  # a `<<` merge key resolves to the merge tag: _Fallback
            if event.anchor is not None:
                anchors[event.anchor] = value
            attach(value, line)
        elif cls is yaml.MappingStartEvent or cls is yaml.SequenceStartEvent:
            line = event.start_mark.line + 1
            is_map = cls is yaml.MappingStartEvent
            if event.tag is not None and event.tag != "!" and event.tag != (_MAP if is_map else _SEQ):
                raise _Fallback(event.tag)
            container: Any = MarkedDict() if is_map else MarkedList()
            container.line = line
            attach(container, line)
            if event.anchor is not None:
                anchors[event.anchor] = container
                open_anchors.add(event.anchor)
            stack.append([container, event.anchor, None, None, True])
        elif cls is yaml.MappingEndEvent or cls is yaml.SequenceEndEvent:
            frame = stack.pop()
            if frame[1] is not None:
                open_anchors.discard(frame[1])
        elif cls is yaml.AliasEvent:
            line = event.start_mark.line + 1
            if event.anchor in open_anchors:
                raise InventoryError(f"alias *{event.anchor} refers to a node that contains it", line=line)
            if event.anchor not in anchors:
                raise _Fallback("unknown alias")  # PyYAML reports it with its own message
            attach(anchors[event.anchor], line)
        elif cls is yaml.DocumentStartEvent:
            documents += 1
            if documents > 1:
                raise _Fallback("several documents")
    return root


def _load(text: str) -> Any:
    try:
        return _load_events(text)
    except _Fallback:
        check_limits(text)  # the fast path stopped early: scan the whole text before PyYAML builds it
        return yaml.load(text, Loader=_MarkingLoader)  # noqa: S506 - _MarkingLoader derives from SafeLoader


def load_yaml_text(text: str, file: Path | None) -> Any:
    """Parse YAML `text` into MarkedDict/MarkedList/scalars.

    Raises InventoryError (with the file and the line of the problem) on any YAML error. The
    message carries PyYAML's problem description but never the offending line's text, which may
    hold a password.
    """
    try:
        return _load(text)
    except InventoryError as exc:
        raise InventoryError(exc.message, file=file, line=exc.line, field=exc.field) from None
    except YamlLimitError as exc:
        raise InventoryError(exc.message, file=file, line=exc.line) from None
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


def kind(value: Any) -> str:
    """A YAML-user's name for the type of `value` ("mapping", "list", "string", ...)."""
    if isinstance(value, dict):
        return "mapping"
    if isinstance(value, list):
        return "list"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if value is None:
        return "null"
    return type(value).__name__


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
