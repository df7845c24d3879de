"""Memoizing the request policy's answer on the parts of the input the policy reads.

A Rego policy that names ``input`` only as ``input.<field>.<field>…`` (any index,
iteration or call below such a reference stays inside that subtree) and calls no
builtin whose answer depends on anything but its arguments is a pure function of
``data`` and the input's values at those references. :func:`input_references` proves
that from the modules' syntax tree (parsed by regorus, the same Rego v1 the engines
load) and returns the references, or None when it cannot: ``input`` used whole (passed
to a function, indexed with brackets, replaced with ``with``), a non-deterministic or
side-effecting builtin (:data:`IMPURE_BUILTINS`), or modules regorus does not parse.

:class:`DecisionCache` keys an answer by the canonical JSON of the input document's
values at those references (an absent one keyed apart from every value), so two
inputs that share a key are indistinguishable to the policy. ``data`` (request settings,
catalog) is fixed for an engine: a cache belongs to one engine and dies with it; a new
policy or catalog comes with a new engine and a new cache. A budget crossing changes
``input.budget`` and so the key. Bounded: least recently used keys are dropped beyond
``capacity``.

Not thread-safe: one event loop. Cached answers are shared between hits; callers must
not modify them.
"""

from __future__ import annotations

import functools
import json
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import Any, Final

__all__ = ["DEFAULT_CAPACITY", "IMPURE_BUILTINS", "DecisionCache", "input_references"]

DEFAULT_CAPACITY: Final = 4096
"""Answers kept per engine."""

IMPURE_BUILTINS: Final = frozenset(
    {
        "crypto.x509.parse_and_verify_certificates",
        "crypto.x509.parse_and_verify_certificates_with_options",
        "http.send",
        "io.jwt.decode_verify",
        "net.lookup_ip_addr",
        "opa.runtime",
        "print",
        "rand.intn",
        "time.now_ns",
        "trace",
        "uuid.rfc4122",
    }
)
"""Builtins whose answer (or effect) is not a function of their arguments alone (the
clock, randomness, the network, output)."""

Reference = tuple[str, ...]


def input_references(modules: Mapping[str, str]) -> frozenset[Reference] | None:
    """The shortest ``input`` paths the policy in ``modules`` reads (``()`` never appears:
    that is None), or None when the policy's answer cannot be proven a function of them
    (see the module docstring). Parses on the calling thread (~10-20 ms for the shipped
    policy), once per distinct set of modules: the last few answers are remembered, so a
    caller can parse on a worker thread first and swap the policy in on its event loop
    without waiting. Never raises; thread-safe."""
    return _references(tuple(sorted(modules.items())))


@functools.lru_cache(maxsize=8)
def _references(modules: tuple[tuple[str, str], ...]) -> frozenset[Reference] | None:
    try:
        import regorus  # type: ignore[import-untyped]  # noqa: PLC0415

        engine = regorus.Engine()
        for name, source in modules:
            engine.add_policy(name, source)
        tree = json.loads(engine.get_ast_as_json())
        del engine
    except Exception:  # noqa: BLE001 - anything regorus cannot parse is simply not cached
        return None
    nodes = list(_walk(tree))
    inner = {id(n["RefDot"]["refr"]) for n in nodes if isinstance(n.get("RefDot"), dict)}
    found: set[Reference] = set()
    covered: set[int] = set()
    for node in nodes:
        call = node.get("Call")
        if isinstance(call, dict) and _dotted_name(call.get("fcn")) in IMPURE_BUILTINS:
            return None
        if isinstance(node.get("RefDot"), dict) and id(node) not in inner:
            base, path = _chain(node)
            if _var(base) == "input":
                found.add(path)
                covered.add(id(base))
    if any(_var(node) == "input" and id(node) not in covered for node in nodes):
        return None  # input used whole: every part of it may matter
    return frozenset(_shortest(found))


class DecisionCache:
    """Answers by the values of ``references`` in an input document (LRU, ``capacity``).

    Counts :attr:`hits` and :attr:`misses` for the node's figures and benchmarks."""

    def __init__(self, references: frozenset[Reference], capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be > 0")
        self._references = tuple(sorted(references))
        self._capacity = capacity
        self._answers: OrderedDict[str, Any] = OrderedDict()
        self.hits = 0
        self.misses = 0

    @property
    def references(self) -> tuple[Reference, ...]:
        return self._references

    def __len__(self) -> int:
        return len(self._answers)

    def key(self, document: Mapping[str, Any]) -> str:
        """The canonical JSON of ``document``'s values at the references.

        Raises:
            TypeError, ValueError: the values are not JSON.
        """
        return json.dumps(
            [_lookup(document, path) for path in self._references],
            sort_keys=True,
            separators=(",", ":"),
            allow_nan=False,
        )

    def get(self, key: str) -> Any | None:
        """The answer stored under ``key`` (None: not stored; counted as a miss)."""
        answer = self._answers.get(key)
        if answer is None:
            self.misses += 1
            return None
        self._answers.move_to_end(key)
        self.hits += 1
        return answer

    def put(self, key: str, answer: Any) -> None:
        """Store ``answer`` (not None) under ``key``, dropping the least recently used."""
        self._answers[key] = answer
        self._answers.move_to_end(key)
        while len(self._answers) > self._capacity:
            self._answers.popitem(last=False)


def _lookup(document: Mapping[str, Any], path: Reference) -> list[Any]:
    """``[value]`` at ``path``, or ``[]`` when ``document`` has nothing there (so an absent
    place and any value, ``null`` included, never share a key)."""
    node: Any = document
    for part in path:
        if not isinstance(node, Mapping) or part not in node:
            return []
        node = node[part]
    return [node]


def _walk(tree: Any) -> Iterator[dict[str, Any]]:
    """Every object in the syntax tree."""
    stack: list[Any] = [tree]
    while stack:
        current = stack.pop()
        if isinstance(current, dict):
            yield current
            stack.extend(current.values())
        elif isinstance(current, list):
            stack.extend(current)


def _var(node: Any) -> str | None:
    var = node.get("Var") if isinstance(node, dict) else None
    if isinstance(var, dict) and isinstance(var.get("value"), str):
        value: str = var["value"]
        return value
    return None


def _chain(node: dict[str, Any]) -> tuple[Any, Reference]:
    """The base of a ``RefDot`` chain (``a.b.c`` → the node of ``a``) and its fields."""
    fields: list[str] = []
    while isinstance(node, dict) and isinstance(node.get("RefDot"), dict):
        dot = node["RefDot"]
        field = dot.get("field")
        fields.append(str(field[1]) if isinstance(field, list) and len(field) == 2 else "")
        node = dot.get("refr")
    return node, tuple(reversed(fields))


def _dotted_name(node: Any) -> str:
    """``a.b.c`` for a called function's reference ("" for anything else)."""
    base, fields = _chain(node)
    name = _var(base)
    return ".".join((name, *fields)) if name is not None else ""


def _shortest(paths: set[Reference]) -> set[Reference]:
    """``paths`` without those below another one (its subtree already holds them)."""
    return {p for p in paths if not any(p[:n] in paths for n in range(1, len(p)))}
