"""A playbook's text templates (rule reasons, templated variants) are compiled when it loads: a
broken one is a load error naming file and field, before any host is contacted, not one host's
`unknown` in the middle of a run."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from playbooks.assess import BUILTIN_DIR
from playbooks.spec import PlaybookError, load_playbook_file


def _copy_with(tmp_path: Path, field: str, text: str) -> Path:
    raw = yaml.safe_load((BUILTIN_DIR / "kb954960" / "playbook.yaml").read_text(encoding="utf-8"))
    raw["rules"][0][field] = text
    out = tmp_path / "broken.yaml"
    out.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return out


@pytest.mark.parametrize("field", ["reason", "variant"])
def test_a_broken_template_is_a_load_error_naming_file_and_field(tmp_path: Path, field: str) -> None:
    path = _copy_with(tmp_path, field, "server {{ facts.version ")
    rule_id = yaml.safe_load(path.read_text(encoding="utf-8"))["rules"][0]["id"]
    with pytest.raises(PlaybookError) as err:
        load_playbook_file(path)
    assert str(path) in str(err.value)
    assert f"field rules.{rule_id}.{field}" in str(err.value)


def test_a_valid_template_loads(tmp_path: Path) -> None:
    path = _copy_with(tmp_path, "reason", "checked {{ facts | length }} facts")
    assert load_playbook_file(path).rules[0].reason == "checked {{ facts | length }} facts"
