"""Message extraction for the report catalogs, with Babel's extractors.

Messages come from the templates (`_()` / `gettext` calls, jinja2 extractor) and from the Python
modules of `kbfix.report` (`N_()` markers: status labels, advisory titles, CSV headings).
`python -m kbfix.report.catalog` writes `templates/locale/kbfix.pot` and merges it into every
language's `.po` (new messages appear untranslated, which the catalog test then reports).
"""

from __future__ import annotations

from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po, write_po

from kbfix.report.i18n import LANGUAGES
from templates import LOCALE_DIR, TEMPLATE_DIR, catalog_path

REPORT_DIR = Path(__file__).resolve().parent
_TEMPLATE_METHODS = [("report.html", "jinja2"), ("report.md", "jinja2")]
_PYTHON_METHODS = [("*.py", "python")]


def extract() -> Catalog:
    """A catalog (no translations) of every message the report renderers can ask for."""
    cat = Catalog(project="kbfix", domain="kbfix", charset="utf-8")
    sources = ((TEMPLATE_DIR, _TEMPLATE_METHODS, "templates"), (REPORT_DIR, _PYTHON_METHODS, "kbfix/report"))
    for folder, methods, prefix in sources:
        for filename, lineno, message, comments, context in extract_from_dir(
            str(folder), method_map=methods, options_map={"**.html": {}, "**.md": {}}
        ):
            cat.add(message, locations=[(f"{prefix}/{filename}", lineno)], auto_comments=comments, context=context)
    return cat


def message_ids() -> set[str]:
    """The set of msgids `extract()` finds (plural ids as their singular)."""
    return {m.id if isinstance(m.id, str) else m.id[0] for m in extract() if m.id}


def missing(lang: str) -> list[str]:
    """Msgids the `.po` of `lang` does not translate (absent, empty or fuzzy), sorted."""
    with catalog_path(lang).open("rb") as fh:
        po = read_po(fh, locale=lang)
    out = []
    for msgid in message_ids():
        m = po.get(msgid)
        if m is None or not m.string or m.fuzzy:
            out.append(msgid)
    return sorted(out)


def update() -> None:
    """Write `kbfix.pot` and merge it into each translated language's `.po` (keeps translations)."""
    template = extract()
    with (LOCALE_DIR / "kbfix.pot").open("wb") as fh:
        write_po(fh, template, omit_header=False, sort_output=True)
    for lang in LANGUAGES:
        if lang == "en":
            continue
        path = catalog_path(lang)
        if path.is_file():
            with path.open("rb") as fh:
                po = read_po(fh, locale=lang)
        else:
            po = Catalog(locale=lang, domain="kbfix", project="kbfix")
        po.update(template, update_header_comment=False)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as fh:
            write_po(fh, po, sort_output=True, ignore_obsolete=True, width=110)


if __name__ == "__main__":
    update()
