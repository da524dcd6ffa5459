"""Inventories that weaken WinRM security load, with a warning naming the weakness."""

from __future__ import annotations

from pathlib import Path

from inventory import load_inventory

BASE = """kbfix_inventory: 1
defaults: {username: 'LAB\\\\kbfix', password: 'Pw-1-secret'}
hosts:
  SAFE: {address: 10.0.0.1}
"""


def _load(tmp_path: Path, extra: str) -> tuple[str, ...]:
    path = tmp_path / "inv.yml"
    path.write_text(BASE + extra, encoding="utf-8")
    return load_inventory([path]).warnings


def test_safe_defaults_warn_nothing(tmp_path: Path) -> None:
    assert _load(tmp_path, "") == ()


def test_validation_off_and_basic_over_http_are_named(tmp_path: Path) -> None:
    warnings = _load(tmp_path, "  NOCERT: {address: 10.0.0.2, cert_validation: ignore}\n"
                               "  CLEAR: {address: 10.0.0.3, scheme: http, transport: basic, allow_unencrypted: true}\n")
    assert len(warnings) == 2
    assert warnings[0].startswith("1 host(s) (e.g. NOCERT): certificate validation is off")
    assert warnings[1].startswith("1 host(s) (e.g. CLEAR): allow_unencrypted")
    assert all("Pw-1-secret" not in w for w in warnings)


def test_ntlm_without_message_encryption_over_http_is_named(tmp_path: Path) -> None:
    """Issue 20 finding 11: accepted without a word before; Basic over HTTP already warned."""
    warnings = _load(tmp_path, "  OPEN: {address: 10.0.0.4, scheme: http, transport: ntlm, message_encryption: never,"
                               " allow_unencrypted: true}\n"
                               "  SEALED: {address: 10.0.0.5, scheme: http, transport: ntlm}\n")
    assert len(warnings) == 1
    assert warnings[0].startswith("1 host(s) (e.g. OPEN): message_encryption is never over plain HTTP")
    assert "Pw-1-secret" not in warnings[0]
