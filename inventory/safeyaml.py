"""The one YAML reader for untrusted files: alias bombs and deep nesting are refused before
anything is built.

A YAML alias (`*a`) is a reference, so PyYAML builds shared objects cheaply; but any code that
walks or copies the result (secret masking, validation, JSON dumps) pays for the *expanded*
tree. "Billion laughs" (nine anchors of ten aliases each, 661 bytes) expands to 10^9 nodes:
issue 20 measured 10.8 GB RSS for an inventory and 6.6 GB for a packages manifest. This module
scans libyaml's event stream once (linear in the file) and counts, per anchor, the size of the
subtree it names; every alias adds that size. A document whose aliases add more than
`MAX_ALIAS_NODES` nodes, or whose nesting is deeper than `MAX_DEPTH`, is refused with the line
of the alias or of the node that went too deep. Ordinary anchors and merge keys (`<<: *defaults`
on every host) stay allowed.

Used by every YAML reader in kbfix: inventories (`inventory.yamlmarks`), the packages manifest
(`playbooks.packages`), playbook data (`playbooks.spec`), the config file, winlab fixtures.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import yaml

#: Nodes that aliases may add to a document once expanded. A real inventory that merges a
#: 10-key `<<: *defaults` into each of 50,000 hosts adds 1,000,000; a bomb adds 10^9.
MAX_ALIAS_NODES = 2_000_000
#: Mapping/sequence nesting; real files nest under 20 (PyYAML's recursive constructor
#: overflows Python's stack near 1,000).
MAX_DEPTH = 100

_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # type: ignore[assignment]


class YamlLimitError(ValueError):
    """A YAML document over a size limit: `message` in an operator's words, 1-based `line`."""

    def __init__(self, message: str, line: int | None) -> None:
        super().__init__(message if line is None else f"line {line}: {message}")
        self.message = message
        self.line = line


def guarded_events(text: str, *, max_alias_nodes: int = MAX_ALIAS_NODES, max_depth: int = MAX_DEPTH
                   ) -> Iterator[yaml.Event]:
    """libyaml's events for `text`, checked as they pass (linear time, memory per anchor).

    Raises YamlLimitError when the aliases would expand past `max_alias_nodes` nodes or nesting
    passes `max_depth`; yaml.YAMLError for malformed YAML (an alias to an unknown anchor is left
    to the composer's own error).
    """
    sizes: dict[str, int] = {}  # anchor -> nodes in its expanded subtree
    stack: list[list[Any]] = []  # [anchor, nodes so far]
    added = 0
    for event in yaml.parse(text, Loader=_BaseLoader):
        ev: Any = event  # the stubs type events as the base class; anchors live on node events
        cls = type(ev)
        size = 0
        if cls is yaml.ScalarEvent:
            size = 1
            if ev.anchor is not None:
                sizes[ev.anchor] = 1
        elif cls is yaml.AliasEvent:
            size = sizes.get(ev.anchor, 1)
            added += size
            if added > max_alias_nodes:
                raise YamlLimitError(
                    f"YAML aliases expand to more than {max_alias_nodes:,} nodes (alias *{ev.anchor}): "
                    "refusing a possible alias bomb", ev.start_mark.line + 1)
        elif cls is yaml.MappingStartEvent or cls is yaml.SequenceStartEvent:
            if len(stack) >= max_depth:
                raise YamlLimitError(f"YAML nesting is deeper than {max_depth} levels", ev.start_mark.line + 1)
            stack.append([ev.anchor, 1])
        elif cls is yaml.MappingEndEvent or cls is yaml.SequenceEndEvent:
            anchor, size = stack.pop()
            if anchor is not None:
                sizes[anchor] = size
        if size and stack:  # a finished node (scalar, alias or closed collection) counts in its parent
            stack[-1][1] += size
        yield event


def check_limits(text: str, **limits: int) -> None:
    """Scan `text` once; raise YamlLimitError (see `guarded_events`) or yaml.YAMLError."""
    for _ in guarded_events(text, **limits):
        pass


def safe_load(text: str, **limits: int) -> Any:
    """`yaml.safe_load` (libyaml when present) after `check_limits`.

    Raises YamlLimitError for a bomb or deep nesting (nothing is built), yaml.YAMLError for
    malformed YAML.
    """
    check_limits(text, **limits)
    return yaml.load(text, Loader=_BaseLoader)  # noqa: S506 - CSafeLoader/SafeLoader


def safe_compose(text: str, **limits: int) -> yaml.Node | None:
    """`yaml.compose` with the safe loader after `check_limits` (for line maps)."""
    check_limits(text, **limits)
    return yaml.compose(text, Loader=_BaseLoader)
