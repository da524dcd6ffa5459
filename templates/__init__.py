"""The packaged report templates and their gettext catalogs: where they live on disk.

`templates/` holds the Jinja2 templates (`report.html`, `report.md`) and one gettext catalog
per language at `locale/<lang>/LC_MESSAGES/kbfix.po`. The catalogs are compiled when they are
loaded (`kbfix.report.i18n`), so a `.po` edit needs no build step. `kbfix.report` renders from here;
operators override a template by putting a file of the same name in a directory they configure.
"""

from __future__ import annotations

from pathlib import Path

TEMPLATE_DIR: Path = Path(__file__).resolve().parent
"""The folder of the packaged templates (`report.html`, `report.md`)."""

LOCALE_DIR: Path = TEMPLATE_DIR / "locale"
"""The folder of the gettext catalogs (`<lang>/LC_MESSAGES/kbfix.po`)."""

DOMAIN = "kbfix"
"""The gettext domain (catalog file stem)."""

TEMPLATE_NAMES: tuple[str, ...] = ("report.html", "report.md")
"""The templates the renderers load by name; an override file must use the same name."""


def catalog_path(lang: str) -> Path:
    """The `.po` file of one language (e.g. `locale/de/LC_MESSAGES/kbfix.po`); it may not exist."""
    return LOCALE_DIR / lang / "LC_MESSAGES" / f"{DOMAIN}.po"
