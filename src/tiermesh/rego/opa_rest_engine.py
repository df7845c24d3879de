"""An engine that is a standalone OPA server, driven over its REST API.

Uses ``opa-python-client`` (``requests`` underneath): policies through the
Policy API (``PUT``/``DELETE /v1/policies/<module name>``), data through the
Data API (``PUT``/``DELETE /v1/data/<top-level key>``), decisions through
``POST /v1/data/<path>``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any, NoReturn
from urllib.parse import urlsplit

import requests
from opa_client import OpaClient  # type: ignore[import-untyped]
from opa_client.errors import (  # type: ignore[import-untyped]
    DeleteDataError,
    DeletePolicyError,
)
from opa_client.errors import RegoParseError as ClientRegoParseError

from tiermesh.rego._error_text import PARSE_CODE, opa_problems
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
    RegoProblem,
)

__all__ = ["OpaRestEngine"]

_NAME = "opa-rest"
_log = logging.getLogger(__name__)


class OpaRestEngine:
    """:class:`PolicyEngine` backed by an OPA server at ``url`` (e.g. ``http://127.0.0.1:8181``).

    Ownership: the adapter manages only the policy ids and top-level data keys
    it wrote itself. ``load`` deletes the ones the new set drops and writes
    the rest; module names are used as policy ids. Top-level data values must
    be JSON objects (the client writes objects only). ``close`` closes the
    HTTP session and leaves the server's state alone.

    Not atomic on the server: other clients may observe a half-written set
    during ``load``. When a module is rejected, the adapter puts back the
    modules of the previous set (best effort) before raising.

    ``input=None`` sends ``"input": null``: a real OPA server then sees
    ``input == null`` rather than an undefined input (the client always sends
    the key). Rules that only read fields of ``input`` behave the same.

    Thread safety: every method may be called from any thread; calls are
    serialised on one HTTP session.

    Errors: :class:`EngineUnavailable` naming ``url`` when the server cannot
    be reached or times out; :class:`RegoParseError` / :class:`RegoCompileError`
    with the server's ``file:line`` locations; :class:`PolicyEvalError` for
    evaluation failures (HTTP 4xx/5xx on the Data API).
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 5.0,
        retries: int = 0,
        token: str | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"OPA server URL must be http(s)://host[:port], got {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        self.url = url.rstrip("/")
        self._client: Any = OpaClient(
            host=parts.hostname,
            port=port,
            ssl=parts.scheme == "https",
            timeout=timeout,
            retries=retries,
            token=token,
        )
        self._lock = threading.Lock()
        self._modules: dict[str, str] = {}
        self._data_keys: set[str] = set()
        self._closed = False

    @property
    def name(self) -> str:
        return _NAME

    def load(self, modules: Mapping[str, str], data: Mapping[str, JSONValue] | None = None) -> None:
        data = dict(data or {})
        for key, value in data.items():
            if not isinstance(value, dict):
                raise PolicyError(
                    f"{_NAME}: top-level data value {key!r} must be a JSON object for the REST API"
                )
        with self._lock:
            self._check_open()
            previous = self._modules
            try:
                self._put_modules(previous, dict(modules))
            except RegoParseError:
                self._restore(previous, dict(modules))
                raise
            self._modules = dict(modules)
            for key in self._data_keys - data.keys():
                self._request(self._client.delete_data, key)
            for key, value in data.items():
                try:
                    self._request(self._client.update_or_create_data, value, key)
                except ClientRegoParseError as exc:
                    raise PolicyError(f"{_NAME}: data {key!r} rejected: {exc}") from exc
            self._data_keys = set(data)

    def evaluate(self, path: str, input: JSONValue = None) -> JSONValue | Undefined:
        segments = check_path(path, engine=_NAME)
        with self._lock:
            self._check_open()
            try:
                body = self._request(self._client.query_rule, input, ".".join(segments))
            except requests.HTTPError as exc:
                self._raise_eval_error(path, exc)
        if not isinstance(body, dict) or "result" not in body:
            return UNDEFINED
        value: JSONValue = body["result"]
        return value

    def run_tests(self) -> list[RegoTestResult]:
        with self._lock:
            self._check_open()
            modules = dict(self._modules)
        return run_rego_tests(modules, self.evaluate)

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._client.close_connection()

    # -- internals --------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise EngineClosed(_NAME)

    def _request(self, call: Any, *args: Any) -> Any:
        try:
            return call(*args)
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise EngineUnavailable(
                _NAME, f"cannot reach the OPA server: {exc}", url=self.url
            ) from exc
        except (DeleteDataError, DeletePolicyError) as exc:
            raise PolicyError(f"{_NAME}: {exc.expression}: {exc.message}") from exc

    def _put_modules(self, previous: Mapping[str, str], modules: Mapping[str, str]) -> None:
        # Deleting first lets a rule move from a dropped module to a new one.
        for file in previous.keys() - modules.keys():
            self._request(self._client.delete_policy, file)
        for file, source in modules.items():
            if previous.get(file) == source:
                continue
            try:
                self._request(self._client.update_policy_from_string, source, file, False)
            except ClientRegoParseError as exc:
                raise _load_error(exc) from exc

    def _restore(self, previous: Mapping[str, str], attempted: Mapping[str, str]) -> None:
        for file in attempted.keys() - previous.keys():
            try:
                self._request(self._client.delete_policy, file)
            except Exception as exc:  # noqa: BLE001 - best effort; the load error is raised
                _log.warning("rollback: deleting policy %s at %s failed: %s", file, self.url, exc)
        for file, source in previous.items():
            if attempted.get(file) == source:
                continue
            try:
                self._request(self._client.update_policy_from_string, source, file, False)
            except Exception as exc:  # noqa: BLE001 - best effort; the load error is raised
                _log.warning("rollback: restoring policy %s at %s failed: %s", file, self.url, exc)

    @staticmethod
    def _raise_eval_error(path: str, exc: requests.HTTPError) -> NoReturn:
        response = exc.response
        message = str(exc)
        location: RegoProblem | None = None
        if response is not None:
            try:
                body = response.json()
            except ValueError:
                body = {}
            if isinstance(body, dict):
                message = str(body.get("message") or message)
                located = [p for p in _problems_from_errors(body.get("errors")) if p.file]
                if not located:
                    located = [p for p in opa_problems(message)[0] if p.file]
                location = located[0] if located else None
        raise PolicyEvalError(path, message, engine=_NAME, location=location) from exc


def _problems_from_errors(errors: object) -> list[RegoProblem]:
    problems: list[RegoProblem] = []
    if not isinstance(errors, list):
        return problems
    for error in errors:
        if not isinstance(error, dict):
            continue
        where = error.get("location") or {}
        row = where.get("row") if isinstance(where, dict) else None
        col = where.get("col") if isinstance(where, dict) else None
        problems.append(
            RegoProblem(
                message=str(error.get("message", "")),
                file=where.get("file") if isinstance(where, dict) else None,
                line=row if isinstance(row, int) and row > 0 else None,
                column=col if isinstance(col, int) and col > 0 else None,
            )
        )
    return problems


def _load_error(exc: Any) -> RegoParseError:
    errors = getattr(exc, "errors", None) or []
    problems = _problems_from_errors(errors)
    if not problems:
        problems, is_parse = opa_problems(str(getattr(exc, "message", exc)))
    else:
        is_parse = any(isinstance(e, dict) and e.get("code") == PARSE_CODE for e in errors)
    cls = RegoParseError if is_parse else RegoCompileError
    return cls(problems, engine=_NAME)
