"""Stand-in update packages for the lab: files whose SHA-256 the lab's installers check.

The real KB954960/KB954474 packages cannot be downloaded here, and the lab does not run their
content: an installer fixture matches the uploaded file by name (`match: '*KB954960*'`) and the
agent checks the SHA-256 before it "runs". These stand-ins let `kbfix demo`, tests and
benchmarks exercise the real path (manifest → hash check → chunked upload → installer.run)
without pretending to be Microsoft's files: their content says what they are.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

# File names as the operator's manifest would name them; the lab's installer fixtures match
# on the KB number only, so the exact Microsoft names (uncertain: see playbooks/*/playbook.yaml)
# do not matter here.
STANDIN_FILES: tuple[tuple[str, str, str], ...] = (
    ("KB954960", "WSUS3.0SP1-KB954960-x64.exe", ">=3.1.6001.0, <3.1.6002"),
    ("KB954474", "SCCM2007-SP1-KB954474-ENU.msi", "*"),
)


def write_standin_packages(folder: Path) -> Path:
    """Write the stand-in packages and a `manifest.yaml` (format: playbooks/packages.py) into
    `folder` (created if needed) and return it. Overwrites earlier stand-ins; each file is a
    few dozen bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for kb, name, fits in STANDIN_FILES:
        data = f"kbfix lab stand-in for {kb} ({name}); not a Microsoft package\n".encode()
        (folder / name).write_bytes(data)
        entries.append(
            f"  - kb: {kb}\n    file: {name}\n    sha256: {hashlib.sha256(data).hexdigest()}\n"
            f"    fits: '{fits}'\n    args: ['/quiet', '/norestart']\n"
        )
    (folder / "manifest.yaml").write_text(
        "# Lab stand-ins written by kbfix (winlab/standin_packages.py): not Microsoft packages.\npackages:\n"
        + "".join(entries),
        encoding="utf-8",
    )
    return folder
