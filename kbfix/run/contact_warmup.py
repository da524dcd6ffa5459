"""What the contact processes' forkserver does once, so that no child does it again.

`kbfix.run.procs.ContactPool` starts its children from multiprocessing's forkserver and names
this module in `set_forkserver_preload`: the forkserver imports it before it forks anyone, and
every child is a copy of the forkserver's memory. Importing this module loads the built-in
playbooks once (their YAML, the roles file, and every condition expression compiled into
`playbooks.conditions`' per-process caches, ~55 ms), which each child would otherwise repeat
when it builds its `PlaybookEngine` (cost, issue 19). Nothing host-specific and nothing secret
is loaded here: the inventory stays each child's own (procs.py's docstring says why).

A failure here must not stop the forkserver (multiprocessing would then fail every child with
an unrelated traceback): a child that finds the caches cold simply fills them itself, and its
own `PlaybookEngine` reports a bad playbook as it would without this module.
"""

from __future__ import annotations


def warm_playbooks() -> bool:
    """Load the built-in playbooks once in this process (fills the compiled-expression and
    roles-file caches). True when they loaded; False when loading raised (the child will
    report the error itself)."""
    from kbfix.run.playbook_engine import PlaybookEngine

    try:
        PlaybookEngine()
    except Exception:  # reported by the child that needs the playbooks, not by the forkserver
        return False
    return True


WARMED = warm_playbooks()
