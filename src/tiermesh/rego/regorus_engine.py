"""The default engine: regorus (Rust), embedded in-process.

A regorus ``Engine`` is *unsendable*: it must be used, and dropped, only on the
thread that created it (pyo3 panics on use from another thread and leaks with
an unraisable error on a foreign drop). This adapter therefore keeps one pair
of regorus engines **per thread**, built lazily from the current policy set,
and stores them in a module-level thread-local so that each is dropped by its
own thread (when that thread exits, or replaces it after a reload).
"""

from __future__ import annotations

import itertools
import json
import threading
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tiermesh.rego._error_text import regorus_problems, strip_backtrace
from tiermesh.rego._rego_tests import run_rego_tests
from tiermesh.rego.engine import (
    UNDEFINED,
    JSONValue,
    RegoTestResult,
    Undefined,
    check_path,
)
from tiermesh.rego.errors import (
    EngineClosed,
    EngineUnavailable,
    PolicyError,
    PolicyEvalError,
    RegoCompileError,
    RegoParseError,
)

__all__ = ["RegorusEngine"]

_NAME = "regorus"
_NOT_A_RULE = "not a valid rule path"
_UNDEFINED_JSON = '"<undefined>"'

_tokens = itertools.count(1)
_live: set[int] = set()
_live_lock = threading.Lock()
_per_thread = threading.local()


@dataclass(frozen=True, slots=True)
class _PolicySet:
    generation: int
    modules: tuple[tuple[str, str], ...] = ()
    data_json: str = "{}"


@dataclass(slots=True)
class _ThreadEngines:
    """The engines of one adapter on one thread.

    ``pristine`` never gets an input (Rego ``input`` stays undefined: regorus
    cannot unset an input once set); ``working`` gets one before each eval.
    """

    generation: int
    pristine: Any
    working: Any = field(default=None)


def _import_regorus() -> Any:
    try:
        import regorus  # type: ignore[import-untyped]  # noqa: PLC0415
    except ImportError as exc:
        raise EngineUnavailable(
            _NAME, f"the gordon-to-regorus package (module regorus) cannot be imported: {exc}"
        ) from exc
    return regorus


def _thread_slots() -> dict[int, _ThreadEngines]:
    slots: dict[int, _ThreadEngines] | None = getattr(_per_thread, "slots", None)
    if slots is None:
        slots = {}
        _per_thread.slots = slots
    return slots


def _forget(token: int) -> None:
    with _live_lock:
        _live.discard(token)


class RegorusEngine:
    """:class:`PolicyEngine` on regorus, Rego v1.

    Thread safety: every method may be called from any thread. ``evaluate``
    on a thread first builds that thread's engines from the current policy set
    (parsing every module once per thread per ``load``), then runs without
    locks. ``load`` is serialised; an ``evaluate`` running concurrently with a
    ``load`` sees either the old or the new set, never a mix. Engines of
    threads that are idle after a ``load`` or ``close`` are released when that
    thread next builds engines for any :class:`RegorusEngine`, or exits.

    Errors: :class:`RegoParseError` (syntax) and :class:`RegoCompileError`
    (e.g. unsafe variables) from ``load`` with ``file:line:col``;
    :class:`PolicyEvalError` from ``evaluate``; :class:`EngineUnavailable` from
    the constructor when regorus cannot be imported.

    Known divergences from OPA, all reported as load errors here: builtins
    regorus lacks (crypto, jwt, x509, cidr_merge); lines longer than 1024
    columns and modules over 20000 lines (regorus's default length limits).
    """

    def __init__(self) -> None:
        self._regorus = _import_regorus()
        self._token = next(_tokens)
        self._lock = threading.Lock()
        self._set = _PolicySet(generation=0)
        self._modules: dict[str, str] = {}
        self._closed = False
        with _live_lock:
            _live.add(self._token)
        weakref.finalize(self, _forget, self._token)

    @property
    def name(self) -> str:
        return _NAME

    def load(self, modules: Mapping[str, str], data: Mapping[str, JSONValue] | None = None) -> None:
        self._check_open()
        candidate = _PolicySet(
            generation=-1,
            modules=tuple(modules.items()),
            data_json=json.dumps(dict(data or {})),
        )
        engine = self._build(candidate, check=True)
        with self._lock:
            self._check_open()
            self._set = _PolicySet(self._set.generation + 1, candidate.modules, candidate.data_json)
            self._modules = dict(modules)
            _thread_slots()[self._token] = _ThreadEngines(self._set.generation, engine)

    def evaluate(self, path: str, input: JSONValue = None) -> JSONValue | Undefined:
        check_path(path, engine=_NAME)
        outcome = self._evaluate(self._engines(), path, input)
        if isinstance(outcome, PolicyError):
            # Raised here, where no regorus engine is a local: the traceback keeps the
            # frame alive and the garbage collector may free it on another thread.
            raise outcome
        return outcome

    def _evaluate(
        self, engines: _ThreadEngines, path: str, input: JSONValue
    ) -> JSONValue | Undefined | PolicyError:
        """Evaluate on this thread's engines; errors are returned, never raised."""
        if input is None:
            engine = engines.pristine
        else:
            if engines.working is None:
                engines.working = engines.pristine.clone()
            engine = engines.working
            try:
                engine.set_input(input)
            except (TypeError, ValueError, RuntimeError) as exc:
                return PolicyEvalError(path, f"input rejected: {exc}", engine=_NAME)
        try:
            raw = engine.eval_rule_as_json(path)
        except RuntimeError as exc:
            if _NOT_A_RULE not in str(exc):
                return self._eval_error(path, exc)
            raw = _UNDEFINED_JSON  # a package, a data document or nothing: ask as a query
        if raw == _UNDEFINED_JSON:  # also a legitimate string value: disambiguate
            return self._query(engine, path)
        value: JSONValue = json.loads(raw)
        return value

    def run_tests(self) -> list[RegoTestResult]:
        self._check_open()
        return run_rego_tests(self._modules, self.evaluate)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._set = _PolicySet(generation=self._set.generation + 1)
            self._modules = {}
        _thread_slots().pop(self._token, None)
        _forget(self._token)

    # -- internals --------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise EngineClosed(_NAME)

    def _engines(self) -> _ThreadEngines:
        current = self._set
        self._check_open()
        slots = _thread_slots()
        engines = slots.get(self._token)
        if engines is None or engines.generation != current.generation:
            with _live_lock:
                for stale in [t for t in slots if t not in _live]:
                    del slots[stale]
            engines = _ThreadEngines(current.generation, self._build(current, check=False))
            slots[self._token] = engines
        return engines

    def _build(self, policy_set: _PolicySet, *, check: bool) -> Any:
        # A failed engine must be dropped here, on its own thread: the raised error's
        # traceback keeps this frame alive, and the garbage collector may free it on any
        # thread, where dropping a regorus Engine is an error. So no engine stays in a
        # local once an error is on its way.
        engine = self._regorus.Engine()
        failure: PolicyError | None = None
        try:
            for file, source in policy_set.modules:
                try:
                    engine.add_policy(file, source)
                except RuntimeError as exc:
                    failure = RegoParseError(regorus_problems(str(exc)), engine=_NAME)
                    break
            else:
                engine.add_data_json(policy_set.data_json)
                if check:
                    try:
                        engine.eval_query("true")  # forces compilation of every module
                    except RuntimeError as exc:
                        failure = RegoCompileError(regorus_problems(str(exc)), engine=_NAME)
        finally:
            if failure is not None:
                del engine
        if failure is not None:
            raise failure
        return engine

    def _query(self, engine: Any, path: str) -> JSONValue | Undefined | PolicyError:
        try:
            answer = json.loads(engine.eval_query_as_json(path))
        except RuntimeError as exc:
            return self._eval_error(path, exc)
        results = answer.get("result") or []
        if not results or not results[0].get("expressions"):
            return UNDEFINED
        value: JSONValue = results[0]["expressions"][0]["value"]
        return value

    @staticmethod
    def _eval_error(path: str, exc: RuntimeError) -> PolicyEvalError:
        problem = regorus_problems(str(exc))[0]
        return PolicyEvalError(
            path,
            strip_backtrace(str(exc)),
            engine=_NAME,
            location=problem if problem.file is not None else None,
        )
