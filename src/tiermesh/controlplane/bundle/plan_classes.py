"""One policy evaluation per node class: nodes in the same situation share one plan.

A routing plan depends on little of its node: tier, region, residency, and the node id
only where the bundle's data names it (a local backend pinned to the node). Every other
node of the same (tier, region, residency) is in one *class*, and the policy is
evaluated for the class once, with a stand-in id (:data:`CLASS_NODE_ID`): each member's
plan is that plan with ``node`` set to the member and the stand-in id replaced by the
member's id in ``violations`` and ``warnings`` (the only text of a plan that echoes the
id), sharing the class's ``routes`` and ``backends`` tuples.

Nothing promises what a policy reads of its input, so each class checks the contract
on its first member: that member is also evaluated for real, and only when its real
plan equals the one derived from the class's plan do the other members share it;
otherwise (a policy that puts the id into a route, hashes it for a canary, or fails
for the stand-in) every member of that class is evaluated on its own, as without
classes. A :class:`ProbeMemo` carried from pass to pass (the reconciler keeps one)
remembers which classes passed that check under which policy code (the Rego modules'
digest): a later pass with the same modules and other data (a catalog push) evaluates
such a class once, for the class alone. A class that failed is checked again.

The check is a guard, not a proof: a policy that treats one particular node id
specially without the data naming it (an id written into the Rego itself) passes it
when that node is not its class's first member. The contract for routing policies is
therefore: read ``input.node.id`` only to compare it with ids the data holds, or to
echo it into messages.

A node whose id is a string anywhere in the data documents (a key or a value:
``backend.node``, a per-node setting) is a class of its own.
"""

from __future__ import annotations

import enum
import hashlib
import secrets
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from tiermesh.controlplane.api import NodeInfo, Plan
from tiermesh.rego import JSONValue

__all__ = [
    "CLASS_NODE_ID",
    "ClassKey",
    "PlanClasses",
    "ProbeMemo",
    "class_key",
    "instantiate",
    "modules_digest",
    "named_strings",
    "names_stand_in",
]

CLASS_NODE_ID: Final = f"plan-class-{secrets.token_hex(12)}"
"""The id a class's plan is evaluated with: a valid node name no bundle can know (random
per process), so that it matches no ``backend.node`` and can be told apart in messages."""

_WALK_LIMIT: Final = 1_000_000
"""Most JSON values :func:`named_strings` visits; a larger data tree names everything
(every node is then its own class)."""

ClassKey = tuple[str, str, tuple[str, ...]]
"""(tier, region, residency): what a node's plan depends on besides a named id."""


def modules_digest(modules: Mapping[str, str]) -> bytes:
    """SHA-256 over the Rego modules (path and text, in path order)."""
    digest = hashlib.sha256()
    for path, text in sorted(modules.items()):
        for part in (path, text):
            data = part.encode()
            digest.update(len(data).to_bytes(8, "big") + data)
    return digest.digest()


class ProbeMemo:
    """Which classes passed the first-member check under which policy code (see the
    module doc). Bounded (least recently used beyond ``size``); thread-safe."""

    def __init__(self, size: int = 1024) -> None:
        self._size = size
        self._passed: OrderedDict[tuple[bytes, ClassKey], None] = OrderedDict()
        self._lock = threading.Lock()

    def passed(self, modules: bytes, key: ClassKey) -> bool:
        with self._lock:
            if (modules, key) not in self._passed:
                return False
            self._passed.move_to_end((modules, key))
            return True

    def note(self, modules: bytes, key: ClassKey) -> None:
        with self._lock:
            self._passed[(modules, key)] = None
            self._passed.move_to_end((modules, key))
            while len(self._passed) > self._size:
                self._passed.popitem(last=False)


class _State(enum.Enum):
    SHARED = "shared"
    PER_NODE = "per-node"


def named_strings(data: Mapping[str, JSONValue]) -> frozenset[str] | None:
    """Every string in ``data`` (object keys and string values, at any depth); None when
    the tree holds more than :data:`_WALK_LIMIT` values (then no node may share)."""
    found: set[str] = set()
    stack: list[JSONValue] = list(data.values())
    found.update(data)
    visited = 0
    while stack:
        visited += 1
        if visited > _WALK_LIMIT:
            return None
        value = stack.pop()
        if isinstance(value, str):
            found.add(value)
        elif isinstance(value, dict):
            found.update(value)
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return frozenset(found)


def class_key(node: NodeInfo) -> ClassKey:
    return (node.tier, node.region, tuple(node.residency))


def names_stand_in(messages: tuple[str, ...]) -> bool:
    """Whether any of ``messages`` echoes :data:`CLASS_NODE_ID`."""
    return any(CLASS_NODE_ID in message for message in messages)


def _swap(messages: tuple[str, ...], node_id: str) -> tuple[str, ...]:
    if not names_stand_in(messages):
        return messages  # the same tuple: nothing of it names the node
    swapped = tuple(message.replace(CLASS_NODE_ID, node_id) for message in messages)
    return tuple(sorted(swapped)) if list(messages) == sorted(messages) else swapped


def instantiate(template: Plan, node: NodeInfo) -> Plan:
    """``template`` (a class's plan, made for :data:`CLASS_NODE_ID`) as made for ``node``:
    same ``routes`` and ``backends`` objects, ``node`` replaced, the stand-in id replaced
    in ``violations`` and ``warnings`` (kept sorted when they were; the template's own
    tuples when they do not echo the stand-in)."""
    return template.model_copy(
        update={
            "node": node,
            "violations": _swap(template.violations, node.id),
            "warnings": _swap(template.warnings, node.id),
        }
    )


@dataclass(slots=True)
class _Class:
    state: _State
    template: Plan | None = None
    members: int = 0


@dataclass(slots=True)
class PlanClasses:
    """The classes met in one evaluation pass (one bundle, one ``data.usage``).

    Not thread-safe: one instance per pass, used on the pass's thread. :attr:`evaluations`
    counts the policy evaluations the pass ran, :attr:`shared` the plans derived from a
    class's plan without one.
    """

    named: frozenset[str] | None
    """Strings of the data documents (see :func:`named_strings`); None: no sharing."""
    modules: bytes = b""
    """:func:`modules_digest` of the pass's policy code."""
    memo: ProbeMemo | None = None
    """Classes checked by earlier passes; None: check every class in this pass."""
    _classes: dict[ClassKey, _Class] = field(default_factory=dict)
    evaluations: int = 0
    shared: int = 0

    def shares(self, node: NodeInfo) -> bool:
        """Whether ``node`` may be planned from its class's plan at all."""
        return self.named is not None and node.id not in self.named

    def template_for(self, node: NodeInfo) -> Plan | None:
        """The plan of ``node``'s class (made for :data:`CLASS_NODE_ID`) when the class is
        known to share; None when ``node`` must be evaluated (first member, or a class
        that cannot share). Counts ``node`` as a member planned from it."""
        if not self.shares(node):
            return None
        entry = self._classes.get(class_key(node))
        if entry is None or entry.state is not _State.SHARED or entry.template is None:
            return None
        entry.members += 1
        self.shared += 1
        return entry.template

    def template_of(self, node: NodeInfo) -> Plan | None:
        """The plan ``node``'s class shares in this pass, if ``node`` may share and its
        class was settled as sharing; None otherwise (counts nothing)."""
        if not self.shares(node):
            return None
        entry = self._classes.get(class_key(node))
        return entry.template if entry is not None and entry.state is _State.SHARED else None

    def plan_for(self, node: NodeInfo) -> Plan | None:
        """:meth:`template_for` instantiated for ``node`` (see :func:`instantiate`)."""
        template = self.template_for(node)
        return instantiate(template, node) if template is not None else None

    def needs_probe(self, node: NodeInfo) -> bool:
        """Whether ``node`` is the first member of a shareable class not yet decided."""
        return self.shares(node) and class_key(node) not in self._classes

    def checked_before(self, node: NodeInfo) -> bool:
        """Whether ``node``'s class passed the check in an earlier pass of this code."""
        return self.memo is not None and self.memo.passed(self.modules, class_key(node))

    def adopt(self, node: NodeInfo, template: Plan | None) -> None:
        """Settle a class checked before from its ``template`` alone (None: it failed
        for the stand-in, so its members are evaluated one by one)."""
        state = _State.SHARED if template is not None else _State.PER_NODE
        self._classes[class_key(node)] = _Class(state, template)

    def decide(self, node: NodeInfo, real: Plan | None, template: Plan | None) -> None:
        """Settle ``node``'s class from its first member's ``real`` plan and the class's
        ``template`` (None when either failed): shared only when the plan derived from
        the template equals the real one."""
        shared = real is not None and template is not None and instantiate(template, node) == real
        if shared and self.memo is not None:
            self.memo.note(self.modules, class_key(node))
        self._classes[class_key(node)] = _Class(
            _State.SHARED if shared else _State.PER_NODE, template if shared else None, 1
        )

    def stand_in(self, node: NodeInfo) -> NodeInfo:
        """The node a class's plan is evaluated for: ``node`` with :data:`CLASS_NODE_ID`."""
        return node.model_copy(update={"id": CLASS_NODE_ID})

    def summary(self) -> dict[str, int]:
        """Counts for logs and benchmarks: classes shared / evaluated per node."""
        states = [entry.state for entry in self._classes.values()]
        return {
            "classes_shared": states.count(_State.SHARED),
            "classes_per_node": states.count(_State.PER_NODE),
            "evaluations": self.evaluations,
            "shared_plans": self.shared,
        }


def distinct_classes(nodes: Iterable[NodeInfo]) -> int:
    """How many (tier, region, residency) classes ``nodes`` fall into."""
    return len({class_key(node) for node in nodes})
