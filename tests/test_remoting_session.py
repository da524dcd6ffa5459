"""AgentSession settings and limits: refused configurations (before any I/O), secrets kept out of
messages, stdin chunking against a host's MaxEnvelopeSize, and the response byte limit."""

from __future__ import annotations

import dataclasses
import logging

import pytest

from remoting.agent_protocol import op
from remoting.endpoint import Endpoint, Secret, Timeouts
from remoting.errors import AuthRejectedError, ConfigurationError, InsecureTransportError, WSManFaultError
from remoting.session import AgentSession
from tests.test_remoting_support import WSUS_LOG, endpoint_for, make_hosts
from winlab.lab import Lab

BASE = Endpoint(host="H1", address="127.0.0.1", port=1, scheme="https", transport="ntlm",
                username="CORP\\svc-kbfix", password=Secret("s3cr3t-Pa55"))


@pytest.mark.parametrize(
    ("changes", "error", "words"),
    [
        ({"scheme": "http", "transport": "basic"}, InsecureTransportError, "Basic"),
        ({"scheme": "http", "message_encryption": "never"}, InsecureTransportError, "never"),
        ({"transport": "certificate"}, ConfigurationError, "not supported"),
        ({"transport": "basic", "message_encryption": "always"}, ConfigurationError, "cannot encrypt"),
        ({"password": None}, ConfigurationError, "password"),
        ({"timeouts": Timeouts(operation=30, read=30)}, ConfigurationError, "must exceed"),
        ({"timeouts": Timeouts(connect=0)}, ConfigurationError, "positive"),
    ],
)
def test_refused_settings_raise_at_construction(changes: dict[str, object], error: type[Exception], words: str) -> None:
    with pytest.raises(error, match=words) as err:
        AgentSession(dataclasses.replace(BASE, **changes))  # type: ignore[arg-type]
    assert err.value.host == "H1"  # type: ignore[attr-defined]


def test_allowed_settings_construct_without_connecting() -> None:
    # Port 1 on loopback is closed: construction must not touch the network.
    AgentSession(BASE)
    AgentSession(dataclasses.replace(BASE, scheme="http"))  # NTLM over http: sealed messages
    AgentSession(dataclasses.replace(BASE, scheme="http", transport="basic", allow_unencrypted=True))


def test_password_never_appears_in_errors_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with Lab(make_hosts()) as lab:
        ep = endpoint_for(lab, "WSUS01", password=Secret("Hunter2-unique"))
        with pytest.raises(AuthRejectedError) as err:  # the lab account has another password
            with AgentSession(ep):
                pass
    text = f"{err.value!s} {err.value!r} {ep!r} {caplog.text}"
    assert "Hunter2-unique" not in text


def test_stdin_is_chunked_to_the_hosts_envelope_size() -> None:
    with Lab(make_hosts(extra="    wsman: {max_envelope_kb: 12}")) as lab:
        with AgentSession(endpoint_for(lab, "WSUS01"), max_envelope_size=12 * 1024) as s:
            resp = s.run([op("l", "log.scan", path=WSUS_LOG, pattern="InternalServerError")])
        assert resp.results[0].ok
        rec = lab.records("WSUS01")
        assert rec.requests["Send"] >= 3 and rec.processes_started == 1
        # Too large a budget for this host: the service refuses the envelope (w:EncodingLimit).
        with pytest.raises(WSManFaultError, match="refused Send") as err:
            with AgentSession(endpoint_for(lab, "WSUS01"), max_envelope_size=153600) as s:
                s.run([op("e", "env.expand", text="x")])
        assert (err.value.subcode or "").endswith("EncodingLimit") and err.value.fault_code is not None
        assert lab.open_shells() == 0


def test_response_limit_truncates_later_ops() -> None:
    with Lab(make_hosts()) as lab:
        with AgentSession(endpoint_for(lab, "WSUS01"), response_limit=2000) as s:
            resp = s.run([op("a", "env.expand", text="x" * 100),
                          op("b", "log.scan", path=WSUS_LOG, pattern=".", max_matches=1000),
                          op("c", "env.expand", text="y")])
    assert resp.truncated
    kinds = {r.id: (r.ok, r.error.kind if r.error else None) for r in resp.results}
    assert kinds["a"] == (True, None) and kinds["b"] == (False, "limit") and kinds["c"] == (False, "limit")


def test_dns_failure_and_plain_http_errors_map_to_operator_words() -> None:
    import requests
    import urllib3
    import winrm.exceptions as wexc

    from remoting.errors import UnreachableError
    from remoting.wsman_client import map_exception

    pool = urllib3.HTTPConnectionPool("wsus01.corp.invalid", 5986)
    dns = requests.exceptions.ConnectionError(urllib3.exceptions.MaxRetryError(
        pool, "/wsman", urllib3.exceptions.NameResolutionError("wsus01.corp.invalid", None, OSError("no name"))))  # type: ignore[arg-type]
    err = map_exception(dns, dataclasses.replace(BASE, address="wsus01.corp.invalid"), "Create")
    assert isinstance(err, UnreachableError) and "cannot be resolved" in str(err) and not err.transient
    busy = map_exception(wexc.WinRMTransportError("http", 503, ""), BASE, "Create")
    assert isinstance(busy, UnreachableError) and busy.transient and "HTTP 503" in str(busy)
    assert str(busy).startswith("H1: ")
