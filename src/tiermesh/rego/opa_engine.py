"""The oracle engine: the real OPA Go engine, in-process via ``opa_bindings``.

``opa-golib-python-bindings`` is alpha and installed outside the lock; nothing
outside this module imports it.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from tiermesh.rego._error_text import opa_problems
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

__all__ = ["OpaLibraryEngine"]

_NAME = "opa"


def _import_bindings() -> Any:
    try:
        import opa_bindings  # type: ignore[import-untyped]  # noqa: PLC0415
    except ImportError as exc:
        raise EngineUnavailable(
            _NAME,
            "the opa-golib-python-bindings package (module opa_bindings) is not installed; "
            f"install it with pip --ignore-requires-python ({exc})",
        ) from exc
    return opa_bindings


def _covered_lines(report: Any) -> dict[str, list[int]]:
    """``{file: sorted covered line numbers}`` from an OPA coverage report.

    The report (``OpaEngine.last_coverage``) is ``{"files": {file: {"covered":
    [{"start": {"row": r, ...}, "end": {"row": r2, ...}}, ...], ...}}, ...}``; a
    range covers every row from ``start`` to ``end`` inclusive.
    """
    if not isinstance(report, dict):
        return {}
    covered: dict[str, list[int]] = {}
    for file, entry in (report.get("files") or {}).items():
        lines: set[int] = set()
        for span in (entry or {}).get("covered") or []:
            start = int(span["start"]["row"])
            end = int(span.get("end", span["start"])["row"])
            lines.update(range(start, end + 1))
        covered[str(file)] = sorted(lines)
    return covered


class OpaLibraryEngine:
    """:class:`PolicyEngine` on the OPA 1.x Go engine (Rego v1 by default).

    Thread safety: every method may be called from any thread. The Go engine
    serialises evaluations internally (one at a time per adapter). ``load``
    builds a fresh Go engine and swaps it in; evaluations already running
    finish on the old one, which is released when the last of them returns.

    Errors: :class:`RegoParseError` / :class:`RegoCompileError` from ``load``
    with every ``file:line`` OPA reported; :class:`PolicyEvalError` from
    ``evaluate``; :class:`EngineUnavailable` from the constructor when the
    bindings or their shared library cannot be loaded.
    """

    def __init__(self) -> None:
        self._bindings = _import_bindings()
        self._lock = threading.Lock()
        self._modules: dict[str, str] = {}
        self._engine: Any | None = self._new_engine()

    @property
    def name(self) -> str:
        return _NAME

    def load(self, modules: Mapping[str, str], data: Mapping[str, JSONValue] | None = None) -> None:
        self._current()
        engine = self._new_engine()
        error = self._bindings.OpaError
        try:
            for file, source in modules.items():
                try:
                    engine.add_policy(file, source)
                except error as exc:
                    problems, is_parse = opa_problems(exc.message)
                    cls = RegoParseError if is_parse else RegoCompileError
                    raise cls(problems, engine=_NAME) from exc
            if data:
                try:
                    engine.add_data(dict(data))
                except error as exc:
                    raise PolicyError(f"{_NAME}: data document rejected: {exc.message}") from exc
            try:
                engine.eval_query("true")  # compiles every module now, not on first use
            except error as exc:
                problems, is_parse = opa_problems(exc.message)
                cls = RegoParseError if is_parse else RegoCompileError
                raise cls(problems, engine=_NAME) from exc
        except BaseException:
            engine.close()
            raise
        with self._lock:
            if self._engine is None:
                engine.close()
                raise EngineClosed(_NAME)
            self._engine = engine
            self._modules = dict(modules)

    def evaluate(self, path: str, input: JSONValue = None) -> JSONValue | Undefined:
        value, _ = self._eval(path, input, coverage=False)
        return value

    def evaluate_covered(
        self, path: str, input: JSONValue = None
    ) -> tuple[JSONValue | Undefined, dict[str, list[int]]]:
        """Evaluate ``path`` like :meth:`evaluate`, recording which lines ran.

        Returns the value (or ``UNDEFINED``) and, for every loaded module file that
        OPA's coverage report mentions, the sorted line numbers it covered: rule
        heads whose bodies succeeded and the body expressions evaluated. A file with
        nothing covered maps to ``[]``. The report is taken from the same evaluation
        that produced the value, under the engine's evaluation lock, so concurrent
        calls cannot mix reports. Errors as :meth:`evaluate`.
        """
        return self._eval(path, input, coverage=True)

    def _eval(
        self, path: str, input: JSONValue, *, coverage: bool
    ) -> tuple[JSONValue | Undefined, dict[str, list[int]]]:
        segments = check_path(path, engine=_NAME)
        engine = self._current()
        result: JSONValue | Undefined
        try:
            with engine._eval_lock:  # re-entrant: keeps last_coverage ours until read
                try:
                    result = engine.eval_document(".".join(segments), input, coverage=coverage)
                except self._bindings.OpaUndefinedError:
                    result = UNDEFINED
                report = engine.last_coverage if coverage else None
        except self._bindings.OpaError as exc:
            problems, _ = opa_problems(exc.message)
            location = problems[0] if problems[0].file is not None else None
            raise PolicyEvalError(path, str(exc), engine=_NAME, location=location) from exc
        return result, _covered_lines(report)

    def run_tests(self) -> list[RegoTestResult]:
        self._current()
        return run_rego_tests(self._modules, self.evaluate)

    def close(self) -> None:
        with self._lock:
            self._engine = None
            self._modules = {}

    def _current(self) -> Any:
        engine = self._engine
        if engine is None:
            raise EngineClosed(_NAME)
        return engine

    def _new_engine(self) -> Any:
        try:
            return self._bindings.OpaEngine()
        except OSError as exc:  # libopabridge.so missing or not loadable here
            raise EngineUnavailable(
                _NAME, f"the OPA bridge library cannot be loaded: {exc}"
            ) from exc
