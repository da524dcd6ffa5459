"""Playbook conditions: Jinja2 expressions in a sandbox, as Ansible evaluates `when:`.

Conditions and derived facts in the playbook YAML are Jinja2 *expressions* (not templates),
compiled by `jinja2.sandbox.SandboxedEnvironment.compile_expression`, never `eval`. Missing
facts are `ChainableUndefined`, so `facts.sms_setup.values['Full Version']` on a host without
the key is undefined (falsy) instead of an error. Helpers available in every expression:
`V(text)` → `Version` or none, `VR(spec, parts=4)` → `VersionRange`, `T(text)` → an aware UTC
`datetime` from ISO-8601 text or none, `latest(list)` → the latest of a list of ISO texts or none.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from functools import lru_cache
from types import MethodType
from typing import Any

from jinja2 import ChainableUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment
from jinja2.utils import consume

from playbooks.version import Version, VersionRange


class ConditionError(ValueError):
    """A playbook expression that does not compile or fails to evaluate; names the expression."""


def _v(text: object) -> Version | None:
    return Version.maybe(text if isinstance(text, (str, Version)) else None)


def _vr(spec: str, parts: int = 4) -> VersionRange:
    return VersionRange.parse(spec, parts)


def _t(text: object) -> datetime | None:
    """ISO-8601 text → aware UTC datetime (naive = UTC); anything else → None."""
    if isinstance(text, datetime):
        return text if text.tzinfo else text.replace(tzinfo=timezone.utc)
    if not isinstance(text, str) or not text:
        return None
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def _latest(items: object) -> datetime | None:
    """The latest time of an iterable of ISO-8601 texts (None entries skipped), or None."""
    if not isinstance(items, (list, tuple)):
        return None
    times = [t for t in (_t(x) for x in items) if t is not None]
    return max(times, default=None)


class _FactsEnvironment(SandboxedEnvironment):
    """Sandbox where `a.b` on a mapping reads the key `b` first: facts are dicts, and a fact key
    named like a dict method (`values`, `items`, `update`) must not resolve to the method."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        # cost (issue 19): facts are plain dicts, so test for one before the Mapping ABC check
        # (an `isinstance` against an ABC costs about as much as the key lookup ~75 times a host)
        if type(obj) is dict:
            if attribute in obj:
                return obj[attribute]
            if attribute not in _DICT_ATTRIBUTES:
                # What the sandbox gives after two exceptions (no such attribute, no such key),
                # without them: a missing fact is common (`vars.x`, `history.y`, `data.Path`).
                return self.undefined(obj=obj, name=attribute)
        elif isinstance(obj, Mapping) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        # cost (issue 19): `data['Full Version']` on a dict, as the sandbox reads it (the key, else
        # an attribute of that name, else undefined) without its exceptions; a dict attribute's
        # name and anything but a dict and a str go the sandbox's way
        if type(obj) is dict and type(argument) is str:
            if argument in obj:
                return obj[argument]
            if argument not in _DICT_ATTRIBUTES:
                return self.undefined(obj=obj, name=argument)
        return super().getitem(obj, argument)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # Jinja's signature
        """`SandboxedEnvironment.call`, with a short way for the helpers (`V`, `VR`, `T`, `latest`)
        and the methods of the values they return (`Version`, `VersionRange`: `prefix`, `contains`).

        They are our own plain functions: safe to call, and neither marked unsafe nor taking a
        Jinja context, so the sandbox's checks and `Context.call`'s look-ups (about a third of
        an evaluation that calls `V`; issue 19) always end in `__obj(*args, **kwargs)`. (A
        method's name went through the sandbox's attribute check when it was read.) What
        `Context.call` does besides is kept: it drops the loop/block variables Jinja passes
        inside loops and blocks, and a StopIteration becomes undefined."""
        helper = _HELPERS.get(id(__obj))
        if (helper is not None and helper is __obj) or (type(__obj) is MethodType and type(__obj.__self__) in _VALUE_TYPES):
            helper = __obj
            kwargs.pop("_block_vars", None)
            kwargs.pop("_loop_vars", None)
            try:
                return helper(*args, **kwargs)
            except StopIteration:
                return __self.undefined("value was undefined because a callable raised a StopIteration exception")
        return super().call(__context, __obj, *args, **kwargs)


#: The expression helpers by id (`_FactsEnvironment.call` compares identity too).
_HELPERS: dict[int, Any] = {id(f): f for f in (_v, _vr, _t, _latest)}
#: The types of the helpers' values whose methods `_FactsEnvironment.call` calls directly.
_VALUE_TYPES = frozenset({Version, VersionRange})
#: Every attribute a plain dict has (from `dict` and `object`; a dict instance has no others).
_DICT_ATTRIBUTES = frozenset(dir({}))


@lru_cache(maxsize=1)
def _env() -> SandboxedEnvironment:
    # One environment per process; it holds no per-host state (globals are pure helpers).
    env = _FactsEnvironment(undefined=ChainableUndefined, autoescape=False)
    env.globals.update({"V": _v, "VR": _vr, "T": _t, "latest": _latest})
    return env


@lru_cache(maxsize=512)
def _compiled(expr: str) -> Any:
    try:
        return _env().compile_expression(expr, undefined_to_none=False)
    except TemplateError as exc:
        raise ConditionError(f"bad expression {expr!r}: {exc}") from exc


def compile_check(expr: str) -> None:
    """Compile `expr` once to report syntax errors at load time. Raises ConditionError."""
    _compiled(expr)


def template_check(text: str) -> None:
    """Compile the text template `text` (a rule's reason or variant) once, to report syntax
    errors at load time instead of as one host's `unknown` mid-run; the compiled template
    stays in `render`'s per-process cache (compiling costs ~1 ms, the first host that needed
    each reason paid it inside the run: issue 19). Raises ConditionError."""
    try:
        _template(text)
    except TemplateError as exc:
        raise ConditionError(f"bad template {text!r}: {exc}") from exc


_EMPTY: Mapping[str, Any] = {}


@lru_cache(maxsize=1)
def _globals() -> dict[str, Any]:
    return dict(_env().globals)


def _render_context(template: Any, context: Mapping[str, Any]) -> Any:
    """A render context for one of our templates over the helpers (`_globals`) and `context`,
    merged into one fresh dict that the context uses as its parent (the render writes only to
    its own `vars`).

    What `template.new_context({**globals, **context}, shared=True)` makes, without passing the
    template's globals: `Context.__init__` copies their keys into `globals_keys` (a walk of a
    ChainMap, about half an evaluation's cost; issue 19), and Jinja reads `globals_keys` only
    when a template is made into a module (imports, `Template.module`), never for a render. The
    globals' VALUES are in the parent; the sandbox is the environment's."""
    env = template.environment
    return env.context_class(env, {**_globals(), **context}, template.name, template.blocks)


class Scope(Mapping[str, Any]):
    """The names of a series of evaluations (one playbook on one host: facts, roles, host, vars,
    history, then each derived name as it is `set`), read-only as a Mapping, and the one render
    context its evaluations share. `evaluate`, `truth` and `render` accept it as their context.

    Each evaluation sees what a fresh render context over the same names would (`_render_context`):
    the parent is the helpers and the names merged once (`set` writes to both, so a name set
    later shadows a helper as it does in the merge), and the render writes only to the context's
    `vars` and `exported_vars`, emptied before each use. A context whose render raised is dropped
    (it may be left half-changed). The shared context is for our environment's unnamed templates
    without blocks (every expression and reason text); any other gets one of its own. (cost,
    issue 19: the context and the merge cost about a third of a short evaluation, ~40 a host.)
    Not for sharing between threads."""

    __slots__ = ("_context", "_names", "_parent")

    def __init__(self, names: Mapping[str, Any] = _EMPTY) -> None:
        self._names: dict[str, Any] = dict(names)
        self._parent: dict[str, Any] = {**_globals(), **self._names}
        self._context: Any = None

    def set(self, name: str, value: Any) -> None:
        """Add or replace one name."""
        self._names[name] = value
        self._parent[name] = value

    def __getitem__(self, name: str) -> Any:
        return self._names[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def _render_context(self, template: Any) -> Any:
        """A render context for `template` over these names, ready for a render: the shared one
        when `template` may use it (see the class docstring), else a fresh one."""
        env = template.environment
        if template.name is not None or template.blocks or env is not _env():
            return env.context_class(env, self._parent, template.name, template.blocks)
        return self._shared()

    def _shared(self) -> Any:
        """The shared render context (for `_env()`'s unnamed templates without blocks), emptied."""
        rc = self._context
        if rc is None:
            env = _env()
            rc = self._context = env.context_class(env, self._parent, None, {})
        else:
            rc.vars.clear()
            rc.exported_vars.clear()
        return rc


def _call(expr: str, context: Mapping[str, Any]) -> Any:
    """What `TemplateExpression.__call__(**context)` returns, without its per-call copy of the
    template's globals (a ChainMap walked on every call: most of the ~0.1 ms an evaluation
    cost; a host evaluates ~40 expressions): the globals and `context` merged into one fresh dict
    that the render context uses as its parent (`shared=True`; the render writes only to its
    own `vars`). (A Scope's evaluations take `evaluate`'s shorter way.)"""
    template = _expression_template(expr)
    if template is None:  # another Jinja2 layout: the public call
        return _compiled(expr)(**context)
    render_context = _render_context(template, context)
    consume(template.root_render_func(render_context))
    return render_context.vars["result"]


@lru_cache(maxsize=512)
def _expression_template(expr: str) -> Any:
    """The template inside `_compiled(expr)` (None in another Jinja2 layout). Raises ConditionError."""
    return getattr(_compiled(expr), "_template", None)


def evaluate(expr: str, context: Mapping[str, Any]) -> Any:
    """Evaluate a Jinja2 expression against `context`; undefined results become None.

    Raises ConditionError when evaluation fails (type errors, sandbox violations)."""
    try:
        template = _expression_template(expr)
        if template is not None and type(context) is Scope:
            # An expression's template is `_env()`'s, unnamed and without blocks: the Scope's
            # shared context may serve (see Scope).
            render_context = context._shared()
            try:
                for _ in template.root_render_func(render_context):
                    pass
            except BaseException:
                context._context = None  # it may be left half-changed: the next evaluation gets a new one
                raise
            value = render_context.vars["result"]
        else:
            value = _call(expr, context)
    except ConditionError:
        raise
    except Exception as exc:  # any failure inside a condition is a playbook data error
        raise ConditionError(f"expression {expr!r} failed: {exc}") from exc
    return None if isinstance(value, ChainableUndefined) else value


def truth(expr: str, context: Mapping[str, Any]) -> bool:
    """Evaluate `expr` as a condition (Python truthiness; undefined is False)."""
    return bool(evaluate(expr, context))


@lru_cache(maxsize=512)
def _template(text: str) -> Any:
    # Compiling a template costs about 1 ms; the same few reason texts render for every host.
    return _env().from_string(text)


def render(template: str, context: Mapping[str, Any]) -> str:
    """Render a short text template (reasons, notes) with the same sandbox and context."""
    try:
        compiled = _template(template)
        # `Template.render(**context)` less its globals walk (see `_render_context`); the same
        # context (globals, then the names) and output.
        if type(context) is not Scope:
            return compiled.environment.concat(compiled.root_render_func(_render_context(compiled, context)))
        render_context = context._render_context(compiled)
        try:
            return compiled.environment.concat(compiled.root_render_func(render_context))
        except BaseException:
            context._context = None
            raise
    except Exception as exc:  # a broken message template must name itself
        raise ConditionError(f"template {template!r} failed: {exc}") from exc
