"""The Jinja2 environment the templated formats (HTML, Markdown) render with.

Loader chain: the operator's override directories first, then the packaged `templates/`
(a file of the same name wins, so a site can restyle a report without forking). Autoescape is on
for `.html`/`.htm`/`.xml` templates; the Markdown template escapes with explicit filters
(`md`, `fence`). gettext comes from jinja2's i18n extension with new-style (autoescaping,
`%(name)s`) calls. Data reaches templates only as context values, never as template source.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from kbfix.report.i18n import check_language, translations
from kbfix.report.text import md_cell, md_code, md_fence, visible_controls
from templates import TEMPLATE_DIR


def safe_url(url: object) -> str:
    """`url` when it is http(s) or mailto, else `#` (a `javascript:` source link must not run)."""
    text = str(url)
    return text if urlsplit(text).scheme.lower() in ("http", "https", "mailto") else "#"


# A URL inside a source citation such as `Microsoft KB954960 article <https://support.microsoft.com/kb/954960>`.
_URL = re.compile(r"(?:https?://|mailto:)[^\s<>\"']+", re.IGNORECASE)


def source_parts(text: object) -> dict[str, str | None]:
    """Split a source citation into `{"label", "url"}`: the first http(s)/mailto URL in it (None if
    there is none) and the text around it (the URL itself when there is no other text)."""
    s = str(text)
    m = _URL.search(s)
    if m is None:
        return {"label": s, "url": None}
    url = m.group(0).rstrip(".,;")
    # A `)` closes the URL's own `(` (learn.microsoft.com's `…(v=vs.85)`) unless unbalanced, as
    # GitHub's autolinks treat it; stripping it broke the link and left `<)` in the label.
    while url.endswith(")") and url.count(")") > url.count("("):
        url = url[:-1].rstrip(".,;")
    label = (s[: m.start()] + s[m.start() + len(url) :]).replace("<>", "").strip(" <>,.;:-")
    return {"label": label or url, "url": url}


def os_text(os: Mapping[str, Any] | None) -> str:
    """A one-line OS description from the host's `os` facts (caption/name, version, build, language)."""
    if not os:
        return ""
    # Keys as the agent's identity probe reports them (os_version, arch, culture) and as
    # inventories commonly name them (caption, service_pack, build, language).
    keys = ("caption", "name", "product", "version", "os_version", "service_pack", "build", "arch",
            "language", "lang", "culture")
    parts = [str(os[k]) for k in keys if os.get(k) not in (None, "")]
    if not parts:
        parts = [f"{k}={v}" for k, v in sorted(os.items()) if v not in (None, "")]
    return " ".join(dict.fromkeys(parts))


def by_id(advisories: Sequence[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """A host's advisory results keyed by advisory id."""
    return {a["id"]: a for a in advisories}


def _visible_value(value: Any) -> Any:
    """Jinja `finalize`: strings with their controls made visible (`visible_controls`); Markup
    stays Markup (swapping a control for its picture cannot create markup); others unchanged."""
    if isinstance(value, Markup):
        return Markup(visible_controls(str(value)))  # noqa: S704 - already escaped; controls only swapped
    if isinstance(value, str):
        return visible_controls(value)
    return value


class ReportEnvironment(Environment):
    """An Environment whose `x.key` looks in a dict before its attributes: the document is plain
    dicts, and a fleet report does hundreds of thousands of these lookups (Jinja's default
    order, attribute first, costs about a third of the HTML render time)."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        """`obj[attribute]` for a dict holding that key, else Jinja's usual lookup."""
        if type(obj) is dict:
            try:
                return obj[attribute]
            except KeyError:
                pass
        return super().getattr(obj, attribute)


@lru_cache(maxsize=32)
def _environment(lang: str, dirs: tuple[str, ...]) -> Environment:
    loaders = [FileSystemLoader(d) for d in dirs] + [FileSystemLoader(str(TEMPLATE_DIR))]
    env = ReportEnvironment(
        loader=ChoiceLoader(loaders),
        autoescape=select_autoescape(enabled_extensions=("html", "htm", "xml"), default=False),
        extensions=["jinja2.ext.i18n"],
        undefined=StrictUndefined,
        trim_blocks=False,
        lstrip_blocks=False,
        keep_trailing_newline=True,
        # Every `{{ }}` value, not only log lines: a host name, OS caption or error text from a
        # hostile host shows ESC as U+241B, never as a raw control (issue 20 finding 4).
        finalize=_visible_value,
    )
    env.install_gettext_translations(translations(lang), newstyle=True)  # type: ignore[attr-defined]
    env.filters.update(
        md=md_cell,
        mdcode=md_code,
        fence=md_fence,
        visible=visible_controls,
        safe_url=safe_url,
        source_parts=source_parts,
        os_text=os_text,
        groupby_id=by_id,
    )
    return env


def environment(lang: str, template_dirs: Sequence[Path] = ()) -> Environment:
    """The environment for `lang` with `template_dirs` searched before the packaged templates.
    Cached per (lang, dirs); templates still reload when a file changes. Raises
    UnknownLanguageError for an unsupported language."""
    check_language(lang)
    return _environment(lang, tuple(str(Path(d)) for d in template_dirs))
