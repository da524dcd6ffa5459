"""The terminal sanitiser (kbfix/terminal.py) and the safe YAML reader (inventory/safeyaml.py):
property tests, and Rich's live progress fed a hostile host's error text."""

from __future__ import annotations

import io
import logging
import re

import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st
from rich.console import Console

from inventory.safeyaml import safe_load
from kbfix.progress import RichProgress
from kbfix.terminal import SanitizingFilter, cell, safe_markup, safe_text
from playbooks.model import HostError, HostResult, Status
from winlab.hostile import ESCAPE_TEXT

UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


@given(st.text())
def test_safe_text_leaves_no_control_and_is_idempotent(text: str) -> None:
    out = safe_text(text)
    assert not UNSAFE.search(out)
    assert safe_text(out) == out


@given(st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cf", "Cs"))))
def test_safe_text_keeps_printable_text(text: str) -> None:
    assert safe_text(text) == text


@given(st.text())
@example("\\[")  # found by hypothesis: Rich unescapes a plain `\[` that is not a tag
@example("\\\\[a")
@example("[[b]")
def test_markup_and_cells_print_literally(text: str) -> None:
    console = Console(file=io.StringIO(), width=10_000, no_color=True, highlight=False, force_terminal=False)
    # As interpolated in kbfix: followed by a real tag (Rich's escape protects a trailing backslash).
    console.print(safe_markup(text) + "[dim]|[/dim]", end="")
    console.print(cell(text), end="")
    printed = console.file.getvalue()  # type: ignore[attr-defined]
    assert printed == safe_text(text) + "|" + safe_text(text)


scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20))
documents = st.recursive(scalars, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids,
                                                                                          max_size=4), max_leaves=25)


@settings(max_examples=80, deadline=None)
@given(documents)
def test_safe_load_reads_what_pyyaml_reads(doc: object) -> None:
    text = yaml.safe_dump(doc)
    assert safe_load(text) == yaml.safe_load(text)


def test_rich_progress_shows_a_hostile_error_as_text() -> None:
    buf = io.StringIO()
    progress = RichProgress(Console(file=buf, force_terminal=True, no_color=True, width=400))
    progress.start("check", 1, 1)
    progress.batch(0, 1)
    progress.host_done(HostResult(host="WSUS01" + ESCAPE_TEXT, status=Status.FAILED,
                                  error=HostError(kind="agent", message="stderr: " + ESCAPE_TEXT)))
    progress.stop()
    out = buf.getvalue()
    assert "\x1b]0;pwned-title" not in out and "\x1b[2J" not in out and "\x1b]8;" not in out
    assert "\\x1b]0;pwned-title\\x07" in out and "[bold red]line[/]" in out


def test_log_records_are_sanitised() -> None:
    record = logging.LogRecord("kbfix", logging.WARNING, __file__, 1, "inventory: %s", (ESCAPE_TEXT,), None)
    assert SanitizingFilter().filter(record)
    assert "\x1b" not in record.getMessage() and "\\x1b]0;pwned-title" in record.getMessage()


@settings(max_examples=60, deadline=None)
@given(documents)
def test_safe_load_reads_anchors_and_aliases_like_pyyaml(doc: object) -> None:
    shared = {"a": doc, "b": doc, "c": [doc, doc]}  # safe_dump writes &id001 / *id001 for shared nodes
    text = yaml.safe_dump(shared)
    assert safe_load(text) == yaml.safe_load(text)


def test_alias_count_is_exact_at_the_cap() -> None:
    """A list of 10 scalars aliased N times adds 11·N nodes (the list node and its items)."""
    from inventory.safeyaml import YamlLimitError, check_limits

    text = "a: &x [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\nb: [" + ", ".join(["*x"] * 100) + "]\n"
    check_limits(text, max_alias_nodes=1100)
    with pytest.raises(YamlLimitError) as e:
        check_limits(text, max_alias_nodes=1099)
    assert e.value.line == 2 and "alias *x" in e.value.message
