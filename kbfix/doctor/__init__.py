"""`kbfix doctor` (issue 17): first contact with a real server, read-only, step by step.

Per host: name resolution and TCP connect; TLS (chain against the CA file in use, name, expiry);
the authentication schemes the server offers (its 401 `WWW-Authenticate`) against the configured
transport; authentication (one shell); the WinRM quotas and envelope size from the WS-Man config
resource; the agent's environment (PowerShell/.NET versions, language and code pages, 64-bit
process, FIPS policy, elevated token); the agent's self-test (each read op once, timed); the WSUS
admin API (WSUS servers) and the ConfigMgr Logs folder (site servers). Each failing step carries
the fix an operator types (kbfix/doctor/fixes.yaml). Modules: `model` (values), `fixes`,
`network` (connect, TLS, offered auth, config Get), `agent_steps` (steps over an agent session),
`run` (one host, many hosts), `cli` (the command and its table/JSON output).
"""

from __future__ import annotations

from kbfix.doctor.model import HostDoctor, Step, StepStatus
from kbfix.doctor.run import doctor_host, doctor_hosts

__all__ = ["HostDoctor", "Step", "StepStatus", "doctor_host", "doctor_hosts"]
