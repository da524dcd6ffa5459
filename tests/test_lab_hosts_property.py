"""Property tests: whatever request arrives, the emulated host answers and never raises."""

from __future__ import annotations

import base64
import threading

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from remoting.agent_delivery import build_stdin, command_line
from remoting.agent_protocol import AgentRequest, OpRequest, decode_response
from remoting.ops import OPS
from winlab.fixtures import FixtureError, demo_site, load_host_fixture_text
from winlab.host import EmulatedHost, run_agent_request

KINDS = {"invalid_args", "not_found", "access_denied", "hash_mismatch", "limit", "timeout", "exception"}
_HOSTS = {h.name: h for h in demo_site()}
for _h in _HOSTS.values():
    _h.time_scale = 0.0  # installers take no wall time here


def _host(name: str) -> EmulatedHost:
    return _HOSTS[name]


ARG_KEYS = sorted({k for s in OPS.values() for k in (*s.required, *s.optional)} | {"bogus"})
VALUES = st.one_of(
    st.binary(max_size=40),
    st.sampled_from([
        b"0", b"1", b"-5", b"99999999999999999999", b"64", b"32", b"both", b"*", b"[", b"(?<x", b".*",
        rb"C:\Windows\WindowsUpdate.log", rb"${reg:s:TargetDir}\LogFiles\SoftwareDistribution.log",
        rb"${reg:nope:X}", b"%windir%\\x", b"%", b"HKLM\\SOFTWARE\\Microsoft\\Update Services\\Server\\Setup",
        b"HKXX\\foo", b"\\\\server\\share\\x", b"relative.txt", "ø已".encode(),
        b"6c8b5d2e-0f1a-4b3c-9d4e-5f6a7b8c9d01", b"0" * 64,
    ]),
)
OP = st.builds(
    lambda name, args: (name, args),
    # op names as a client could write them (no TAB/line breaks: those make the document invalid)
    st.one_of(st.sampled_from(sorted(OPS)), st.from_regex(r"\A[A-Za-z0-9_.-]{1,10}\Z")),
    st.dictionaries(st.sampled_from(ARG_KEYS), st.lists(VALUES, min_size=1, max_size=3), max_size=6),
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=st.lists(OP, max_size=6),
    host=st.sampled_from(["WSUS-SP1", "WSUS-RTM", "CM07-SITE", "WSUS-DE", "WSUS-CN"]),
    limit=st.sampled_from([100, 2000, 16 * 1024 * 1024]),
)
def test_random_requests_get_one_answer_per_op(ops: list[tuple[str, dict[str, list[bytes]]]], host: str, limit: int) -> None:
    reqs = tuple(OpRequest("s" if i == 0 else f"o{i}", name, {k: tuple(v) for k, v in args.items()}) for i, (name, args) in enumerate(ops))
    res, resp = run_agent_request(_host(host), AgentRequest(reqs, limit=limit))
    assert res.exit_code == 0 and resp is not None, res.stderr
    assert [r.id for r in resp.results] == [o.id for o in reqs]
    for r in resp.results:
        assert r.ok or (r.error is not None and r.error.kind in KINDS), r
        assert not (r.error and r.error.kind == "exception"), r  # an emulator bug, not a request problem
    if not resp.truncated:
        assert all(not (r.error and r.error.kind == "limit") for r in resp.results)


@settings(max_examples=150, deadline=None)
@given(doc=st.binary(max_size=300), prefix=st.sampled_from([b"", b"kbfix-agent-request\t1\n", b"kbfix-agent-request\t1\nnonce\t" + b"a" * 32 + b"\n"]))
def test_random_request_documents_never_crash(doc: bytes, prefix: bytes) -> None:
    cmd, args = command_line()
    res = _host("WSUS-SP1").execute(cmd, args, build_stdin(prefix + doc), {}, 437, threading.Event())
    assert res.exit_code in (0, 1)
    if res.exit_code == 1:
        assert res.stdout == b"" and res.stderr
    else:
        nonce = res.stdout.split(b"\r\n", 1)[0].removeprefix(b"KBFIX-BEGIN-").decode()
        assert decode_response(res.stdout, nonce).nonce == nonce


@settings(max_examples=100, deadline=None)
@given(stdin=st.binary(max_size=200), command=st.text(max_size=30), args=st.lists(st.text(max_size=12), max_size=4))
def test_random_commands_and_stdin_never_crash(stdin: bytes, command: str, args: list[str]) -> None:
    host = _host("WSUS-RTM")
    for cmd, argv in ((command, args), (*command_line()[:1], command_line()[1]), ("powershell", ["-EncodedCommand", command])):
        res = host.execute(cmd, list(argv), stdin, {}, 437, threading.Event())
        assert isinstance(res.exit_code, int) and isinstance(res.stdout, bytes) and isinstance(res.stderr, bytes)
    encoded = base64.b64encode(command.encode("utf-16-le")).decode()
    res = host.execute(f"powershell -encodedcommand {encoded}", [], b"", {}, 437, threading.Event())
    assert res.exit_code in (0, 1)


SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**12), st.floats(allow_nan=False), st.text(max_size=12),
                    st.sampled_from(["x64", "x86", "utf-16le", "ansi", "Running", "HKLM\\SOFTWARE\\A", "C:\\a.log"]))
KEYS = st.sampled_from(["name", "os", "arch", "culture", "files", "registry", "text", "encoding", "version", "source",
                        "services", "products", "installers", "match", "sets", "faults", "connect", "wsman", "generate",
                        "size_mb", "wsus_updates", "id", "title", "accounts", "HKLM\\SOFTWARE\\A", "C:\\a.log", "zz"])
TREES = st.recursive(SCALARS, lambda kids: st.one_of(st.lists(kids, max_size=4), st.dictionaries(KEYS, kids, max_size=5)),
                     max_leaves=25)


@settings(max_examples=200, deadline=None)
@given(hosts=st.one_of(TREES, st.lists(st.dictionaries(KEYS, TREES, max_size=6), max_size=3)))
def test_random_fixtures_load_or_raise_fixture_error(hosts: object) -> None:
    text = yaml.safe_dump({"hosts": hosts}, allow_unicode=True)
    try:
        loaded = load_host_fixture_text(text, name="random.yaml")
    except FixtureError as exc:
        assert str(exc).startswith("random.yaml")
    else:
        assert all(h.name for h in loaded)


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=200))
def test_random_text_fixtures_raise_only_fixture_error(text: str) -> None:
    try:
        load_host_fixture_text(text, name="t.yaml")
    except FixtureError:
        pass
