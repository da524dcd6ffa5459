"""Translations and locale formatting for the rendered reports.

Catalogs are the `.po` files under `templates/locale/<lang>/LC_MESSAGES/kbfix.po`; they are read
and compiled with Babel when first needed (cached per language, read-only afterwards). English is
the source language and uses the message ids as they are. Dates and numbers go through Babel's
CLDR data for the report's locale; evidence text never goes through gettext.
"""

from __future__ import annotations

import io
from datetime import datetime, timezone
from decimal import Decimal
from functools import lru_cache

from babel import Locale
from babel.dates import format_datetime
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_decimal, format_percent
from babel.support import NullTranslations, Translations

from templates import catalog_path

LANGUAGES: tuple[str, ...] = ("en", "da", "de", "nl", "zh_CN")
"""The report languages: those the two advisories were published in."""


class UnknownLanguageError(ValueError):
    """The requested report language is not one of LANGUAGES."""


# `N_` is the gettext convention Babel's extractor looks for (a marker, translated later).
def N_(message: str) -> str:
    """Mark a message for extraction without translating it here (translated at render time)."""
    return message


# Status labels (playbooks.model.Status values), translated in every catalog.
STATUS_LABELS: dict[str, str] = {
    "not_applicable": N_("Not applicable"),
    "compliant": N_("Compliant"),
    "remediated": N_("Remediated"),
    "mitigated": N_("Mitigated"),
    "waived": N_("Waived"),
    "skipped": N_("Skipped"),
    "pending_reboot": N_("Pending reboot"),
    "non_compliant": N_("Non-compliant"),
    "unknown": N_("Unknown"),
    "failed": N_("Failed"),
    "unreachable": N_("Unreachable"),
}

# Advisory titles as published (support.microsoft.com/kb/954960, /kb/954474); the document's title
# is translated when it is one of these, else shown as it came.
ADVISORY_TITLES: dict[str, str] = {
    "KB954960": N_("WSUS 3.0 (RTM/SP1) cannot deliver updates to clients with Office 2003"),
    "KB954474": N_("ConfigMgr 2007 cannot deploy updates to SMS 2003 clients after the June 2008 updates"),
}

# One-sentence descriptions of the advisories, translated in every catalog (the .po comments cite
# Microsoft's localized article where one was found). Shown instead of the playbook's English summary.
ADVISORY_SUMMARIES: dict[str, str] = {
    "KB954960": N_(
        "WSUS 3.0 and WSUS 3.0 SP1 do not deliver updates to computers that have Office 2003 or Office 2003 "
        "components installed; the clients log 0x8024400E."
    ),
    "KB954474": N_(
        "After the 10 June 2008 updates, ConfigMgr 2007 (RTM and SP1) cannot deploy software updates to SMS 2003 "
        "clients: the legacy catalog sync fails with 'Unexpected DeploymentAction'."
    ),
}

RUN_KIND_LABELS: dict[str, str] = {
    "check": N_("check"),
    "plan": N_("plan"),
    "apply": N_("apply"),
    "verify": N_("verify"),
}

RUN_STATE_LABELS: dict[str, str] = {
    "running": N_("running"),
    "completed": N_("completed"),
    "interrupted": N_("interrupted"),
}

# Why a run stopped early (kbfix.report.document.STOP_REASONS): the banner's first words.
STOP_LABELS: dict[str, str] = {
    "max_fail": N_("a batch failed more than --max-fail-percent allows"),
    "interrupted": N_("the run was interrupted (Ctrl-C, SIGTERM or a lost process)"),
    "window": N_("the change window ended"),
}

SEVERITY_LABELS: dict[str, str] = {
    "critical": N_("critical"),
    "high": N_("high"),
    "important": N_("important"),
    "medium": N_("medium"),
    "moderate": N_("moderate"),
    "low": N_("low"),
}

# Column headings of the CSV rendering (a CSV has no template).
CSV_COLUMNS: tuple[tuple[str, str], ...] = (
    ("host", N_("Host")),
    ("address", N_("Address")),
    ("site", N_("Site")),
    ("roles", N_("Roles")),
    ("os", N_("Operating system")),
    ("host_status", N_("Host status")),
    ("advisory", N_("Advisory")),
    ("title", N_("Title")),
    ("severity", N_("Severity")),
    ("status", N_("Status")),
    ("status_code", N_("Status code")),
    ("reason", N_("Reason")),
    ("variant", N_("Variant")),
    ("evidence", N_("Evidence")),
    ("planned", N_("Planned actions")),
    ("executed", N_("Executed actions")),
    ("observed", N_("Observed (UTC)")),
    ("skip_reason", N_("Skip reason")),
    ("last_status", N_("Last known state")),
    ("waiver", N_("Waiver")),
    ("run", N_("Run ID")),
    ("operator", N_("Operator")),
    ("change_ticket", N_("Change ticket")),
    ("approved_by", N_("Approved by")),
    ("run_stop", N_("Run stopped early")),
)


def check_language(lang: str) -> str:
    """`lang` if supported; raises UnknownLanguageError otherwise."""
    if lang not in LANGUAGES:
        raise UnknownLanguageError(f"unsupported report language {lang!r}; choose one of {', '.join(LANGUAGES)}")
    return lang


@lru_cache(maxsize=len(LANGUAGES))
def translations(lang: str) -> NullTranslations:
    """The compiled catalog of `lang` (NullTranslations for English or a missing catalog).
    Raises UnknownLanguageError for unsupported languages and babel's PoFileError for a broken .po."""
    check_language(lang)
    path = catalog_path(lang)
    if lang == "en" or not path.is_file():
        return NullTranslations()
    with path.open("rb") as fh:
        catalog = read_po(fh, locale=lang, abort_invalid=True)
    buf = io.BytesIO()
    write_mo(buf, catalog)
    buf.seek(0)
    return Translations(buf, domain="kbfix")


class LocaleFormat:
    """Locale-aware formatting of the document's values for one language (Babel, CLDR data).

    Times in the document are ISO strings in UTC; they are shown in UTC (as the audit store
    keeps them), formatted the locale's way, with a trailing `UTC`.
    """

    def __init__(self, lang: str) -> None:
        self.lang = check_language(lang)
        self.locale = Locale.parse(lang)
        self._gettext = translations(lang).gettext

    def gettext(self, message: str) -> str:
        """The translation of `message`, or `message` when the catalog has none."""
        return self._gettext(message)

    def status(self, code: str) -> str:
        """The translated label of a status value (the value itself when unknown)."""
        label = STATUS_LABELS.get(code)
        return self._gettext(label) if label else code

    def kind(self, code: str) -> str:
        """The translated run kind (`check`, `plan`, `apply`, `verify`)."""
        label = RUN_KIND_LABELS.get(code)
        return self._gettext(label) if label else code

    def state(self, code: str) -> str:
        """The translated run state (`running`, `completed`, `interrupted`)."""
        label = RUN_STATE_LABELS.get(code)
        return self._gettext(label) if label else code

    def stop(self, code: str) -> str:
        """The translated reason a run stopped early (`max_fail`, `interrupted`, `window`)."""
        label = STOP_LABELS.get(code)
        return self._gettext(label) if label else code

    def severity(self, code: str | None) -> str:
        """The translated severity (`important` → `wichtig`); empty for None."""
        if not code:
            return ""
        label = SEVERITY_LABELS.get(code.lower())
        return self._gettext(label) if label else code

    def title(self, adv_id: str, title: str) -> str:
        """The advisory title in this language: catalog translation of `title`, else of the
        published title of `adv_id`, else `title` unchanged."""
        translated = self._gettext(title)
        if translated != title or self.lang == "en":
            return translated
        known = ADVISORY_TITLES.get(adv_id)
        return self._gettext(known) if known else title

    def summary(self, adv_id: str, text: str | None) -> str | None:
        """The advisory description in this language: for a known advisory outside English, the
        catalog's translation of its ADVISORY_SUMMARIES sentence; else `text` unchanged."""
        known = ADVISORY_SUMMARIES.get(adv_id)
        if self.lang == "en" or known is None:
            return text
        translated = self._gettext(known)
        return translated if translated != known else text

    def datetime(self, value: str | None) -> str:
        """`2026-11-23T12:00:00Z` → `23.11.2026, 12:00:00 UTC` (de); empty for None."""
        if not value:
            return ""
        return _format_dt(value, self.lang)

    def number(self, value: float | int | None) -> str:
        """A decimal number the locale's way (`1.234,5` in de); empty for None."""
        return "" if value is None else format_decimal(value, locale=self.locale)

    def percent(self, value: float | None) -> str:
        """A percentage given as 0–100 (`97.5` → `97,5 %` in de); `–` for None (nothing assessed)."""
        if value is None:
            return "–"
        # One decimal, in the locale's own percent pattern (`97,5 %` in de, `97,5%` in da).
        return format_percent(Decimal(str(round(value, 1))) / 100, locale=self.locale, decimal_quantization=False)


def parse_iso(value: str) -> datetime:
    """A document time string (`…Z`) as an aware UTC datetime."""
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


@lru_cache(maxsize=4096)
def _format_dt(value: str, lang: str) -> str:
    # Cached: a fleet report repeats the same gather second thousands of times.
    return format_datetime(parse_iso(value), "medium", tzinfo=timezone.utc, locale=lang) + " UTC"
