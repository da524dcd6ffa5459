"""Offline collection (issue 17) for hosts WinRM cannot reach.

`kbfix offline export` writes, per host, one self-contained PowerShell 2.0 script (the agent and
that host's read-only request embedded, bound to a per-export nonce) that an administrator runs
on the server and that writes one signed answer file; `kbfix check --answers DIR` verifies each
answer (format version, export nonce, host and computer name, age, HMAC-SHA256 signature, the
request it answers) and assesses it exactly as an online check.

Modules: `keystore` (the controller-side key and export records), `script` (the PowerShell
script), `answers` (the answer file format and its verification), `replay` (the session and
engine that feed verified answers to the runner), `cli` (the commands).
"""

from __future__ import annotations
