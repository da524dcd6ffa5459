"""`assess` stores the facts `extract_facts` built without a deep copy (issue 19): they must be
plain JSON as built. Checked on every demo-site host through HTTP to the lab, and on an answer
whose data holds every JSON kind (the agent's document is decoded JSON)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

import winlab.fixtures as fixtures_mod
import winlab.lab as lab_mod
from playbooks import HostContext, assess, gather_ops, load_playbooks
from playbooks.assess import _jsonable
from remoting.endpoint import Endpoint, Secret, Timeouts
from remoting.errors import RemotingError
from remoting.session import AgentSession

_PLAIN_LEAVES = (str, int, float, bool, type(None))


def _plain(value: Any, where: str = "facts") -> None:
    """Raise AssertionError naming the first value that is not a plain JSON type."""
    if type(value) is dict:
        for k, v in value.items():
            assert type(k) is str, f"{where}: key {k!r} is {type(k).__name__}"
            _plain(v, f"{where}.{k}")
    elif type(value) is list:
        for i, v in enumerate(value):
            _plain(v, f"{where}[{i}]")
    else:
        assert type(value) in _PLAIN_LEAVES, f"{where} is {type(value).__name__}"


@pytest.fixture(scope="module")
def lab() -> Iterator[Any]:
    with lab_mod.Lab(fixtures_mod.demo_site()) as running:
        yield running


def test_demo_site_facts_are_plain_json_as_assess_returns_them(lab: Any) -> None:
    books = load_playbooks()
    checked = 0
    for name, ep in sorted(lab.endpoints.items()):
        endpoint = Endpoint(host=name, address=ep.address, port=ep.port, scheme="http", transport="ntlm",
                            username="LAB\\kbfix", password=Secret("Secret-1"),
                            timeouts=Timeouts(connect=3, operation=10, read=15, command=60))
        ctx = HostContext(name)
        try:
            with AgentSession(endpoint, check_mode=True) as s:
                result = assess(books, ctx, s.run(gather_ops(books, ctx)))
        except RemotingError:
            continue  # the demo site's unreachable hosts have no facts
        _plain(result.facts)
        assert result.facts == _jsonable(result.facts)
        assert json.loads(json.dumps(result.facts)) == result.facts
        checked += 1
    assert checked >= 10
