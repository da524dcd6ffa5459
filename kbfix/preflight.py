"""Checks made before any host is contacted (issue 14): every option that could fail later
(report format and language, an output path that cannot be written, a change window that has
ended or is not open yet) fails now, with exit 2 and nothing sent.

`check_outputs` and `check_window` raise PreflightError (a usage error: the CLI maps it to exit 2);
`wait_for_window` sleeps until a future window opens, with a countdown, and can be interrupted.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path

from kbfix.window import ChangeWindow


class PreflightError(ValueError):
    """An option that would fail once hosts are contacted; the message names the option."""


def human_duration(seconds: float) -> str:
    """`seconds` (>= 0) as an operator reads it: `42 s`, `17 min`, `29 h`, `3 d 4 h`."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s >= 3 * 3600 and s < 2 * 86400:
        return f"{round(s / 3600)} h"
    big, unit, small, small_unit = (s // 86400, "d", s % 86400 // 3600, "h") if s >= 2 * 86400 else \
        (s // 3600, "h", s % 3600 // 60, "min")
    return f"{big} {unit} {small} {small_unit}" if small else f"{big} {unit}"


def _check_writable(path: Path, option: str) -> None:
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise PreflightError(f"{option} {path}: is a directory, not a file")
    if not parent.is_dir():
        raise PreflightError(f"{option} {path}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise PreflightError(f"{option} {path}: not writable")


def check_outputs(reports: Sequence[Path] = (), lang: str = "en", outputs: Sequence[tuple[str, Path]] = ()) -> None:
    """Raise PreflightError unless every `--report` path has a known format (by extension) and a
    writable folder, `lang` is a report language, and every (option, path) in `outputs` can be
    written. Nothing is created."""
    from kbfix.report import LANGUAGES, UnknownFormatError, format_for_path

    if lang not in LANGUAGES:
        raise PreflightError(f"--lang {lang!r}: choose one of {', '.join(LANGUAGES)}")
    for path in reports:
        try:
            format_for_path(path)
        except UnknownFormatError as exc:
            raise PreflightError(f"--report: {exc}") from None
        _check_writable(path, "--report")
    for option, path in outputs:
        _check_writable(path, option)


def check_window(window: ChangeWindow, *, wait: bool, now: datetime | None = None) -> float:
    """Seconds until `window` opens (0 when open). Raises PreflightError when it has ended, or
    when it opens later and `wait` is False (the message says in how long)."""
    now = now or datetime.now(timezone.utc)
    if now >= window.end:
        raise PreflightError(f"--window {window}: ended {human_duration((now - window.end).total_seconds())} ago")
    ahead = (window.start - now).total_seconds()
    if ahead > 0 and not wait:
        raise PreflightError(f"--window {window}: opens in {human_duration(ahead)}; pass --wait-for-window to "
                             "wait for it, or choose an open window")
    return max(0.0, ahead)


def wait_for_window(
    window: ChangeWindow,
    echo: Callable[[str], None],
    *,
    clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
    sleep: Callable[[float], None] = time.sleep,
    every_s: float = 60.0,
) -> None:
    """Sleep until `window` opens, calling `echo` with "waiting for the change window: opens in …"
    first and every `every_s` seconds (and each second in the last ten). Ctrl-C raises
    KeyboardInterrupt out of `sleep`; the caller reports that nothing was contacted."""
    last = float("-inf")
    while True:
        left = (window.start - clock()).total_seconds()
        if left <= 0:
            echo("change window open: starting")
            return
        elapsed = time.monotonic()
        if elapsed - last >= every_s or left <= 10:
            echo(f"waiting for the change window {window}: opens in {human_duration(left)} (Ctrl-C to stop)")
            last = elapsed
        sleep(min(1.0, left))
