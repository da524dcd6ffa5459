"""kbfix: find and fix KB954960 (WSUS 3.0) and KB954474 (ConfigMgr 2007) across a fleet over WinRM.

`__version__` comes from the installed package metadata (pyproject.toml is the one place the
version is written).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("kbfix")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
