"""Variable references in inventory values, rendered as Ansible templates them, in a Jinja2 sandbox.

Ansible templates a variable's value when it is used (ansible-core `Templar`), with the host's
variables as the context, and follows references through other variables. kbfix renders the
values it uses (connection settings, the password, roles, site) the same way: `{{ var }}`, the
Jinja2 built-in filters (`default`/`d`, `lower`, `upper`, `replace`, `trim`, `join`, `int`, …)
plus the Ansible filters people put in inventories (`bool`, `mandatory`, `regex_replace`,
`ternary`, `b64encode`, `b64decode`), in `jinja2.sandbox.ImmutableSandboxedEnvironment` with
`StrictUndefined`. Magic variables available: `inventory_hostname`, `inventory_hostname_short`,
`group_names`.

Anything kbfix cannot render stops loading with a `TemplateProblem` naming the variable: an
undefined variable, a syntax error, a lookup (`lookup`/`query` are Ansible plugins, not run
here), a reference loop, or a result that still holds `{{`/`{%`. Nothing unrendered is ever sent.
An Ansible `!unsafe` value (`UnsafeText`) is taken literally, never rendered.
A value rendered from a `Secret` (say `{{ vault_win_password }}`) is a `Secret` again, and an
error message never quotes a value.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import jinja2
from jinja2 import meta
from jinja2.sandbox import ImmutableSandboxedEnvironment

from inventory.vault import UnsafeText
from remoting.endpoint import Secret

_MARKERS = ("{{", "{%", "{#")
_UNDEFINED_NAME = re.compile(r"'([^']+)' is undefined")
MAX_DEPTH = 32


class TemplateProblem(ValueError):
    """A value could not be rendered. `variable` names the variable at fault (or None)."""

    def __init__(self, message: str, variable: str | None = None) -> None:
        super().__init__(message)
        self.variable = variable


def is_template(value: Any) -> bool:
    """True for a string holding a Jinja2 marker (`{{`, `{%`, `{#`); never for `!unsafe` text."""
    return isinstance(value, str) and not isinstance(value, UnsafeText) and any(m in value for m in _MARKERS)


def _to_bool(value: Any) -> bool:
    """Ansible's `bool` filter (ansible-core `plugins/filter/core.py::to_bool`)."""
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("yes", "on", "1", "true", "y", "t")


def _mandatory(value: Any, msg: str | None = None) -> Any:
    if isinstance(value, jinja2.Undefined):
        raise jinja2.UndefinedError(msg or f"Mandatory variable {value._undefined_name!r} is undefined")
    return value


def _regex_replace(value: Any, pattern: str = "", replacement: str = "", ignorecase: bool = False,
                   multiline: bool = False) -> str:
    flags = (re.I if ignorecase else 0) | (re.M if multiline else 0)
    return re.sub(pattern, replacement, str(value), flags=flags)


def _ternary(value: Any, true_val: Any, false_val: Any, none_val: Any = None) -> Any:
    if value is None and none_val is not None:
        return none_val
    return true_val if value else false_val


@lru_cache(maxsize=1)
def environment() -> ImmutableSandboxedEnvironment:
    """The one sandboxed Jinja2 environment (strict undefined, Ansible's extra filters)."""
    env = ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False,
                                        keep_trailing_newline=True)
    env.filters.update({
        "bool": _to_bool,
        "mandatory": _mandatory,
        "regex_replace": _regex_replace,
        "ternary": _ternary,
        "b64encode": lambda v: base64.b64encode(str(v).encode("utf-8")).decode("ascii"),
        "b64decode": lambda v: base64.b64decode(str(v)).decode("utf-8"),
    })
    return env


@lru_cache(maxsize=4096)
def _compile(source: str) -> tuple[jinja2.Template, frozenset[str]]:
    env = environment()
    try:
        ast = env.parse(source)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateProblem(f"template syntax error: {exc.message}") from None
    names = frozenset(meta.find_undeclared_variables(ast))
    for plugin in ("lookup", "query", "q"):
        if plugin in names:
            raise TemplateProblem(f"Ansible {plugin}() plugins are not run by kbfix; give the value directly",
                                  variable=plugin)
    return env.from_string(ast), names


@dataclass
class Renderer:
    """Renders values for one host. `variables`: the host's merged variables (Secrets allowed);
    `magic`: inventory_hostname and friends (never secret)."""

    variables: Mapping[str, Any]
    magic: Mapping[str, Any]

    def __post_init__(self) -> None:
        self._done: dict[str, tuple[Any, bool]] = {}
        self._active: list[str] = []

    def render(self, value: Any) -> Any:
        """`value` rendered (a Secret when it is or came from a Secret); non-templates unchanged.
        Raises TemplateProblem."""
        result, secret = self._render(value)
        if secret and not isinstance(result, Secret):
            return Secret(str(result))
        return result

    def _render(self, value: Any) -> tuple[Any, bool]:
        if isinstance(value, Secret):
            plain = value.reveal()
            if not is_template(plain):
                return value, True
            rendered, _ = self._render_text(plain)
            return rendered, True
        if isinstance(value, str):
            if not is_template(value):
                return value, False
            return self._render_text(value)
        if isinstance(value, list):
            items = [self._render(v) for v in value]
            return [v for v, _ in items], any(s for _, s in items)
        if isinstance(value, dict):
            pairs = {k: self._render(v) for k, v in value.items()}
            return {k: v for k, (v, _) in pairs.items()}, any(s for _, s in pairs.values())
        return value, False

    def _variable(self, name: str) -> tuple[Any, bool]:
        if name in self._done:
            return self._done[name]
        if name in self._active:
            chain = " -> ".join([*self._active[self._active.index(name):], name])
            raise TemplateProblem(f"variables refer to each other in a loop ({chain})", variable=name)
        if len(self._active) >= MAX_DEPTH:
            raise TemplateProblem("variable references nest too deeply", variable=name)
        self._active.append(name)
        try:
            out = self._render(self.variables[name])
        finally:
            self._active.pop()
        self._done[name] = out
        return out

    def _render_text(self, source: str) -> tuple[Any, bool]:
        template, names = _compile(source)
        context: dict[str, Any] = {}
        secret = False
        for name in names:
            if name in self.variables:
                value, is_secret = self._variable(name)
                secret = secret or is_secret
                context[name] = value.reveal() if isinstance(value, Secret) else _plain(value)
            elif name in self.magic:
                context[name] = self.magic[name]
        try:
            out = template.render(context)
        except jinja2.UndefinedError as exc:
            found = _UNDEFINED_NAME.search(str(exc.message or ""))
            undefined = found.group(1) if found else None
            raise TemplateProblem(
                f"undefined variable {undefined!r}" if undefined else "a variable or attribute is undefined",
                variable=undefined,
            ) from None
        except jinja2.TemplateError as exc:
            raise TemplateProblem(f"template error ({type(exc).__name__})") from None
        except Exception as exc:  # filters on wrong types: TypeError, ValueError, binascii.Error, …
            raise TemplateProblem(f"template error ({type(exc).__name__})") from None
        if is_template(out):
            raise TemplateProblem("the value still holds '{{', '{%' or '{#' after rendering")
        return out, secret


def _plain(value: Any) -> Any:
    """Nested Secrets revealed for use inside a template (the result is marked secret anyway)."""
    if isinstance(value, Secret):
        return value.reveal()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
