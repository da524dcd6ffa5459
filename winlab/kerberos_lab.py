"""The lab over Kerberos: a `LabKdc` whose principals mirror a `Lab`'s hosts and accounts.

Each served host `NAME` gets the service principal `HTTP/name.lab.test@LAB.TEST` in the keytab
the lab's acceptor reads (KRB5_KTNAME); each host account `DOMAIN\\user` becomes the user
principal `user@LAB.TEST` with the account's password, so the KDC checks the same password the
emulated host would. The inventory connects to 127.0.0.1 and names the SPN's host with
`kerberos_hostname_override`, as one does for a server reached by address.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from winlab.auth import split_user
from winlab.hostapi import LabHost
from winlab.kdc import DOMAIN, LabKdc


def host_fqdn(name: str, domain: str = DOMAIN) -> str:
    """The lab host's DNS name in the lab realm's domain (`WSUS-SP1` → `wsus-sp1.lab.test`)."""
    return f"{name.lower()}.{domain}"


def kdc_for(hosts: Sequence[LabHost], **kwargs: Any) -> LabKdc:
    """A (not yet started) `LabKdc` with every host's SPN and every account as a user principal.
    Raises ValueError when two hosts give one account name different passwords (one principal,
    one password)."""
    users: dict[str, str] = {}
    for host in hosts:
        for account, password in host.accounts.items():
            user = split_user(account)[1]
            if users.setdefault(user, password) != password:
                raise ValueError(f"account {user!r} has different passwords on different hosts; a realm has one")
    return LabKdc(users, [host_fqdn(h.name) for h in hosts], **kwargs)


def write_kerberos_inventory(lab: Any, kdc: LabKdc, path: Path) -> Path:
    """Write the lab's kbfix inventory for Kerberos: `transport: kerberos`, users as
    `user@REALM`, each host's `kerberos_hostname_override`. Returns the absolute path."""
    target = Path(path).resolve()
    # Written beside the target first and renamed at the end: a reader never sees the NTLM draft.
    path = lab.write_inventory(target.with_name(f".{target.name}.draft"), transport="ntlm")
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    defaults = doc["defaults"]
    defaults["transport"] = "kerberos"
    defaults["allow_unencrypted"] = False
    defaults["username"] = kdc.principal(split_user(defaults["username"])[1])
    for name, entry in doc["hosts"].items():
        entry["kerberos_hostname_override"] = host_fqdn(name, kdc.domain)
        if "username" in entry:
            entry["username"] = kdc.principal(split_user(entry["username"])[1])
    text = path.read_text(encoding="utf-8").splitlines()[0] + "\n"  # keep winlab's header comment
    path.write_text(text + yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, allow_unicode=True),
                    encoding="utf-8")
    os.replace(path, target)
    return target
