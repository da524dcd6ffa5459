"""The facts digest (issue 19 made it cheaper: one JSON encoder made once, no circular-reference
bookkeeping, the hash fed in pieces that keep the GIL) is the SHA-256 of the same canonical JSON:
`sha256(json.dumps({"roles": sorted(roles), "facts": non-log facts}, sort_keys=True))`, so digests in
plans and stores written before stay comparable."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from playbooks.assess import _sha256_hex, digest_facts
from playbooks.spec import Probe, Signature

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=40))
json_value = st.recursive(json_leaf, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                             st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                          max_leaves=40)
PROBES = [Probe(id="reg", kind="registry", key="HKLM\\X"),
          Probe(id="log", kind="log", paths=["C:\\a.log"], signatures=[Signature(id="s", pattern="x")])]


@settings(max_examples=300)
@given(st.dictionaries(st.sampled_from(["reg", "log", "other", "wsus_setup"]), json_value, max_size=4),
       st.lists(st.sampled_from(["wsus_server", "office2003", "a"]), max_size=3))
def test_the_digest_is_the_sha256_of_the_canonical_json(facts: dict[str, Any], roles: list[str]) -> None:
    basis = {"roles": sorted(roles), "facts": {k: v for k, v in facts.items() if k != "log"}}
    want = hashlib.sha256(json.dumps(basis, sort_keys=True).encode("utf-8")).hexdigest()
    assert digest_facts(facts, PROBES, roles, jsonable=True) == want
    assert digest_facts(facts, PROBES, roles) == want  # (already JSON-ready: the same text)


@given(st.integers(0, 9000), st.binary(min_size=1, max_size=1))
def test_the_hash_in_pieces_is_the_hash(size: int, byte: bytes) -> None:
    data = bytes((byte[0] + i) % 256 for i in range(size))
    assert _sha256_hex(data) == hashlib.sha256(data).hexdigest()
