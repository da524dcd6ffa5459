"""kbfix's process exit codes: one place, used by the CLI, its --help and the README.

0  every host in scope is compliant, remediated, mitigated (a documented workaround is in place)
   or not applicable
1  internal error (a bug: please report it with the traceback)
2  usage or configuration error (bad option, inventory, plan file, window; a held lock)
3  some host is still non-compliant or pending a reboot, or this run skipped it (window, drift,
   max-fail stop, interruption, host locked by another run), or no host was in scope (every
   selected host is disabled by the inventory, e.g. not WinRM: nothing was done)
4  some host was unreachable, failed, or its outcome is unknown
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """The exit codes (see module docstring)."""

    OK = 0
    INTERNAL = 1
    USAGE = 2
    NON_COMPLIANT = 3
    FAILED = 4


HELP = (
    "Exit codes: 0 all hosts in scope compliant, remediated, mitigated or not applicable; "
    "3 some host still non-compliant, pending reboot or skipped by this run (window, drift, max-fail, interrupted), "
    "or no host in scope (all selected hosts disabled by the inventory, e.g. not WinRM: nothing done); "
    "4 some host unreachable, failed or unknown; 2 usage or configuration error; 1 internal error."
)
"""One-paragraph summary for `--help` texts."""
