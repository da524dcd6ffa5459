"""`remoting.kerberos.explain`: the texts MIT Kerberos/gssapi give (as seen from the lab KDC) map to
operator words; runs without a KDC (tests/test_kerberos_lab.py checks them against a real one)."""

from __future__ import annotations

import pytest

from remoting.endpoint import Endpoint, Secret
from remoting.kerberos import explain, spn_host

EP = Endpoint(host="WSUS01", address="10.0.0.5", transport="kerberos", username="svc@CORP.EXAMPLE",
              password=Secret("Tr0ub4dor&3"), kerberos_hostname_override="wsus01.corp.example")


@pytest.mark.parametrize("text,reason,words", [
    ("Clock skew too great while getting initial credentials", "clock_skew", "clock skew"),
    ("Major (851968): Unspecified GSS failure, Minor (2529638919): Server HTTP/wsus01.corp.example@CORP.EXAMPLE "
     "not found in Kerberos database", "unknown_spn", "HTTP/wsus01.corp.example (unknown SPN)"),
    ("Minor (2529638919): Server krbtgt/UNMAPPED.EXAMPLE@CORP.EXAMPLE not found in Kerberos database",
     "no_realm_mapping", "no realm is mapped"),
    ('Cannot find KDC for realm "CORP.EXAMPLE" -1765328230', "kdc_unreachable", "no KDC could be reached"),
    ("Cannot contact any KDC for realm 'CORP.EXAMPLE'", "kdc_unreachable", "port 88"),
    ("Preauthentication failed -1765328360", "wrong_password", "wrong password"),
    ("Client 'nobody@CORP.EXAMPLE' not found in Kerberos database", "unknown_user", "does not know this user"),
    ("Can't find client principal svc@CORP.EXAMPLE in cache collection", "no_credentials", "run kinit"),
    ("something new", "other", "Kerberos failed"),
])
def test_explain(text: str, reason: str, words: str) -> None:
    err = explain(RuntimeError(text), EP)
    assert err.reason == reason and words in err.message and err.host == "WSUS01"
    assert "Tr0ub4dor" not in str(err)


def test_spn_host_defaults_to_the_address() -> None:
    assert spn_host(EP) == "wsus01.corp.example"
    assert spn_host(Endpoint(host="h", address="wsus02.corp.example")) == "wsus02.corp.example"
