"""Report translations: every message extracted from the templates and renderers (Babel's
extractors) is translated in every catalog; locale formatting of dates, numbers, percentages."""

from __future__ import annotations

import pytest
from babel.messages.pofile import read_po
from markupsafe import escape

from kbfix.report import LANGUAGES, UnknownLanguageError, build_document, render
from kbfix.report.catalog import extract, message_ids, missing
from kbfix.report.i18n import ADVISORY_TITLES, STATUS_LABELS, LocaleFormat, translations
from kbfix.report.sample import ADVISORIES, hosts, run_info
from playbooks.model import Status
from templates import LOCALE_DIR, catalog_path

TRANSLATED = [lang for lang in LANGUAGES if lang != "en"]


def test_extraction_finds_template_and_python_messages() -> None:
    ids = message_ids()
    assert "kbfix compliance report" in ids  # templates/report.html and report.md
    assert "Evidence per host" in ids
    assert set(STATUS_LABELS.values()) <= ids  # N_() markers in kbfix/report/i18n.py
    assert set(ADVISORY_TITLES.values()) <= ids
    locations = {loc for m in extract() if m.id for loc, _line in m.locations}
    assert {"templates/report.html", "templates/report.md", "kbfix/report/i18n.py"} <= locations


def test_every_status_has_a_label() -> None:
    assert set(STATUS_LABELS) == {s.value for s in Status} | {"waived"}


@pytest.mark.parametrize("lang", TRANSLATED)
def test_catalog_translates_every_message(lang: str) -> None:
    assert catalog_path(lang).is_file()
    assert missing(lang) == [], f"{lang} catalog misses messages; run python -m kbfix.report.catalog and translate"


@pytest.mark.parametrize("lang", TRANSLATED)
def test_catalog_has_no_stale_messages(lang: str) -> None:
    with catalog_path(lang).open("rb") as fh:
        po = read_po(fh, locale=lang)
    ids = message_ids()
    stale = sorted(m.id for m in po if m.id and m.id not in ids)
    assert stale == []


def test_missing_detects_a_gap(tmp_path, monkeypatch) -> None:
    # A catalog with one message removed must be reported (the test above can fail).
    import kbfix.report.catalog as catalog_mod

    src = catalog_path("de").read_text(encoding="utf-8")
    cut = src.replace('msgstr "Nicht konform"', 'msgstr ""')
    assert cut != src
    fake = tmp_path / "de" / "LC_MESSAGES" / "kbfix.po"
    fake.parent.mkdir(parents=True)
    fake.write_text(cut, encoding="utf-8")
    monkeypatch.setattr(catalog_mod, "catalog_path", lambda lang: tmp_path / lang / "LC_MESSAGES" / "kbfix.po")
    assert catalog_mod.missing("de") == ["Non-compliant"]


def test_pot_file_is_current() -> None:
    with (LOCALE_DIR / "kbfix.pot").open("rb") as fh:
        pot = read_po(fh)
    assert {m.id for m in pot if m.id} == message_ids()


@pytest.mark.parametrize(
    ("lang", "status", "date", "number", "percent"),
    [
        ("en", "Non-compliant", "Nov 23, 2026, 12:00:05\u202fPM UTC", "12,345.5", "97.5%"),
        ("da", "Overholder ikke", "23. nov. 2026 12.00.05 UTC", "12.345,5", "97,5\xa0%"),
        ("de", "Nicht konform", "23.11.2026, 12:00:05 UTC", "12.345,5", "97,5\xa0%"),
        ("nl", "Niet conform", "23 nov 2026, 12:00:05 UTC", "12.345,5", "97,5%"),
        ("zh_CN", "不合规", "2026年11月23日 12:00:05 UTC", "12,345.5", "97.5%"),
    ],
)
def test_locale_formatting(lang: str, status: str, date: str, number: str, percent: str) -> None:
    f = LocaleFormat(lang)
    assert f.status("non_compliant") == status
    assert f.datetime("2026-11-23T12:00:05Z") == date
    assert f.number(12345.5) == number
    assert f.percent(97.53) == percent
    assert f.percent(None) == "–"
    assert f.datetime(None) == ""


def test_titles_translated_with_fallback() -> None:
    de = LocaleFormat("de")
    title = ADVISORIES["KB954474"]["title"]
    assert de.title("KB954474", title).startswith("ConfigMgr 2007 kann")
    # a differently worded title from the playbooks still gets the published translation
    # (Microsoft's own German title of KB954960, support.microsoft.com/de-de/topic/...a95c7030...)
    assert de.title("KB954960", "WSUS 3.0 and Office 2003 clients") == "Einige Computer erhalten keine Updates vom WSUS-Server"
    assert de.title("KB1", "Something else") == "Something else"
    assert LocaleFormat("en").title("KB954960", "As given") == "As given"
    assert de.severity("important") == "wichtig"
    assert de.kind("apply") == "Anwendung"


@pytest.mark.parametrize("lang", ["da", "de", "nl", "zh_CN"])
def test_advisory_descriptions_translated(lang: str) -> None:
    f = LocaleFormat(lang)
    for adv_id in ("KB954960", "KB954474"):
        text = f.summary(adv_id, "English summary from the playbook")
        assert text and text != "English summary from the playbook"
        assert ("0x8024400E" in text) == (adv_id == "KB954960")  # evidence tokens stay untranslated
    assert f.summary("KB1", "as given") == "as given"
    assert LocaleFormat("en").summary("KB954960", "as given") == "as given"
    html = render(build_document(run_info(), hosts(), ADVISORIES), "html", lang=lang).decode("utf-8")
    assert str(escape(f.summary("KB954474", None))) in html  # autoescaped, as every data value


def test_unknown_language_rejected() -> None:
    with pytest.raises(UnknownLanguageError):
        translations("fr")
    with pytest.raises(UnknownLanguageError):
        LocaleFormat("de_AT")
