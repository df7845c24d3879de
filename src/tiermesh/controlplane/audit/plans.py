"""Compile-time plans as decision records: the control plane's own signed chain.

Every reconcile evaluates ``data.tiermesh.routing.plan`` once per node. A
:class:`PlanRecorder` turns those evaluations into :class:`DecisionRecord` s of kind
``plan`` and appends them to the :class:`~tiermesh.controlplane.audit.AuditStore`:

- ``path`` :data:`PLAN_RECORD_PATH`; ``input`` the exact
  :class:`~tiermesh.controlplane.api.PlanInput` the policy was given (JSON);
- ``result`` an object: ``outcome`` (``"published"`` — the plan's snapshot is served —
  or ``"refused"`` — the reconcile was refused and the previous snapshot keeps serving),
  ``plan_sha256`` (:func:`plan_digest` of the plan; null when no plan came out),
  ``plan_body_sha256`` (SHA-256 of the plan's *body*, the canonical JSON of its
  ``backends`` and ``routes``: ``{"backends":[…],"routes":[…]}``), ``plan_body_stored``
  (whether the database keeps that body's text), ``plan`` (the plan as
  JSON without ``backends`` and ``routes``: version, node, violations, warnings),
  ``summary`` (``routes``: route names, ``backends``: backend names, ``violations``: how
  many), ``bundle`` (the bundle's store revision) and, when refused, ``errors`` (the
  findings that name this node or no node, at most 20, as text);
- ``bundle_revision`` the bundle's SHA-256, ``etcd_revision`` the etcd revision it was
  read at, ``snapshot_version`` the version of the snapshot the node is served after this
  reconcile (the new one when published, the previous one — or null — when refused);
- ``node_spiffe_id`` the SPIFFE ID of the node the plan was made for
  (``spiffe://<td>/node/<id>``).

**Plan bodies are stored once.** The members of a node class share one body (their plans
differ only in the node and the messages naming it): the body's text is stored once, in
the audit database's ``plan_bodies`` table under ``plan_body_sha256``, in the transaction
that stores the first record naming it, when it is at most ``max_plan_bytes``; larger
bodies keep only their digest and the summary. A 1 000-node push of 10 distinct bodies
stores 10 bodies, not 1 000 whole plans. :func:`recorded_plan` puts a record's whole plan
back together and checks it against ``plan_sha256``, which the signature covers, as it
covers ``plan_body_sha256``. Records written before bodies were split out hold the whole
plan in ``plan`` and no ``plan_body_sha256``; :func:`recorded_plan` reads both.

Replay compares :func:`plan_digest` of the candidate's plan with ``plan_sha256``, so a
record stays replayable whether or not its body is stored.

**Chain.** The records form one chain, ``chain_id`` (the control plane's SPIFFE ID,
``spiffe://<td>/controlplane``), numbered and linked exactly as a node's chain is (see
:mod:`tiermesh.controlplane.api.decision`) and signed with the control plane's server key;
the store keeps the signing certificate chain under its fingerprint. The chain continues
across restarts from the last record stored under ``chain_id`` (each restart, and each
renewal of the server certificate, signs with a new server key; every key's certificate
is kept).

**No flooding.** A node gets a record only when its ``(outcome, plan_sha256)`` differs
from that of its last record in the chain (also read back from the store after a
restart): re-evaluating an unchanged bundle adds nothing.

**Cost.** The members of a node class share their plan's ``routes`` and ``backends``
tuples (:mod:`~tiermesh.controlplane.bundle.plan_classes`); those are serialised and
hashed once per reconcile and their canonical JSON reused in every member's
``plan_sha256`` (:class:`_PlanTexts`), so recording N nodes of C classes serialises C
route tables, not N, and stores at most C bodies. The bytes hashed are exactly
:func:`plan_digest`'s.

Task safety: :meth:`PlanRecorder.record` may be awaited from one event loop; calls are
serialised. Hashing, signing and the durable insert run on a worker thread.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import heapq
import itertools
import json
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils
from pydantic import ValidationError

from tiermesh.controlplane.api import NodeInfo, Plan, PlanInput
from tiermesh.controlplane.api.decision import (
    GENESIS_HASH,
    DecisionRecord,
    canonical_bytes,
)
from tiermesh.controlplane.audit.errors import PlanBodyMismatch
from tiermesh.controlplane.audit.store import AuditStore
from tiermesh.controlplane.bundle import BundleOutcome, Finding
from tiermesh.controlplane.reconciler.results import ReconcileResult

__all__ = [
    "DEFAULT_MAX_PLAN_BYTES",
    "PLAN_RECORD_PATH",
    "PlanRecorder",
    "body_digest",
    "plan_digest",
    "plan_summary",
    "recorded_plan",
    "replay_digest",
]

PLAN_RECORD_PATH: Final = "tiermesh/routing/plan"
"""``path`` of plan records (``data.tiermesh.routing.plan``)."""

DEFAULT_MAX_PLAN_BYTES: Final = 256 * 1024
"""Largest plan body (canonical JSON) stored; larger ones keep digest and summary."""

_MAX_ERRORS: Final = 20
_ECDSA_PREHASHED = ec.ECDSA(utils.Prehashed(hashes.SHA256()))

PlanOutcome = Literal["published", "refused"]


def _canonical(value: Any) -> bytes:
    return _text(value).encode()


def _text(value: Any, known: Mapping[int, tuple[object, str]] | None = None) -> str:
    """The canonical JSON text of ``value`` (keys sorted, no whitespace, UTF-8 as is).

    ``known`` maps ``id(obj)`` to ``(obj, its canonical text)`` for objects already
    serialised: inside dicts, such an object is written from there instead of again. The
    text is the same as without ``known``: a dict's canonical form is its keys in order,
    each with its value's canonical form."""
    if known:
        hit = known.get(id(value))
        if hit is not None and hit[0] is value:
            return hit[1]
        if isinstance(value, dict) and all(isinstance(key, str) for key in value):
            members = (f"{_text(key)}:{_text(value[key], known)}" for key in sorted(value))
            return "{" + ",".join(members) + "}"
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


_SHARED_FIELDS: Final = ("routes", "backends")


def body_digest(text: str) -> str:
    """Hex SHA-256 of a plan body's canonical text (``plan_body_sha256``)."""
    return _digest(text.encode())


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def recorded_plan(
    result: Mapping[str, Any], body: Callable[[str], str | None]
) -> dict[str, Any] | None:
    """The whole plan a plan record's ``result`` names, as JSON; None when none came out
    or its body was not stored. ``body`` looks a body's text up by its SHA-256 (e.g.
    :meth:`AuditStore.plan_body`). Reads records with and without split-out bodies.

    Raises:
        PlanBodyMismatch: the body found does not hash to the record's
            ``plan_body_sha256``, or the plan put together is not ``plan_sha256``.
    """
    rest = result.get("plan")
    key = result.get("plan_body_sha256")
    if not isinstance(rest, dict):
        return None
    if key is None:
        return rest
    text = body(str(key))
    if text is None:
        return None
    expected = str(result.get("plan_sha256"))
    if body_digest(text) != key:
        raise PlanBodyMismatch(str(key), expected)
    whole = {**rest, **json.loads(text)}
    if _digest(_canonical(whole)) != expected:
        raise PlanBodyMismatch(str(key), expected)
    return whole


@dataclass(frozen=True, slots=True)
class _Body:
    routes: tuple[Any, ...]
    backends: tuple[Any, ...]
    dumped: dict[str, Any]
    """``routes`` and ``backends`` as :meth:`Plan.model_dump` (JSON mode) gives them."""
    known: dict[int, tuple[object, str]]
    """Their canonical texts, for :func:`_text`."""
    text: str
    """The body's canonical text: ``{"backends":…,"routes":…}``."""
    sha256: str
    size: int
    """Bytes of ``text`` (UTF-8)."""


class _PlanTexts:
    """Plans as JSON and canonical text, each plan body serialised once (module doc).

    A plan body is the pair of ``routes`` and ``backends`` tuples, recognised by identity
    (the tuples are held, so their ids cannot be reused while the entry lives). One
    instance per recorded reconcile; not thread-safe."""

    def __init__(self) -> None:
        self._bodies: dict[tuple[int, int], _Body] = {}

    def split(self, plan: Plan) -> tuple[dict[str, Any], _Body]:
        """``plan.model_dump(mode="json")`` without its body, and that body (serialised
        once for every plan that shares it)."""
        rest = plan.model_dump(mode="json", exclude=set(_SHARED_FIELDS))
        key = (id(plan.routes), id(plan.backends))
        body = self._bodies.get(key)
        if body is not None and body.routes is plan.routes and body.backends is plan.backends:
            return rest, body
        shared = plan.model_dump(mode="json", include=set(_SHARED_FIELDS))
        known = {id(value): (value, _text(value)) for value in shared.values()}
        text = _text(shared, known)
        data = text.encode()
        body = _Body(plan.routes, plan.backends, shared, known, text, _digest(data), len(data))
        self._bodies[key] = body
        return rest, body

    @staticmethod
    def digest(rest: dict[str, Any], body: _Body) -> str:
        """:func:`plan_digest` of the plan split into ``rest`` and ``body``."""
        return _digest(_text({**rest, **body.dumped}, body.known).encode())


def plan_digest(plan: Plan | Any) -> str:
    """Hex SHA-256 of the plan's canonical JSON (as :class:`Plan` serialises it, keys
    sorted, no whitespace). A JSON value is validated as a :class:`Plan` first, so a
    policy's raw result and the validated plan have the same digest.

    Raises:
        pydantic.ValidationError: ``plan`` is JSON that is not a plan.
    """
    model = plan if isinstance(plan, Plan) else Plan.model_validate(plan)
    return _digest(_canonical(model.model_dump(mode="json")))


def replay_digest(result: Any) -> str | None:
    """:func:`plan_digest` of a candidate policy's result, None when it is not a plan."""
    if result is None:
        return None
    try:
        return plan_digest(result)
    except ValidationError:
        return "invalid:" + _digest(_canonical(result))


def _summary(plan: Plan) -> dict[str, Any]:
    return {
        "routes": [route.name for route in plan.routes],
        "backends": [backend.name for backend in plan.backends],
        "violations": len(plan.violations),
    }


def plan_summary(result: Any) -> dict[str, Any] | None:
    """The ``summary`` a plan record holds, for a policy's raw result (None: not a plan)."""
    try:
        return _summary(Plan.model_validate(result))
    except ValidationError:
        return None


@dataclass(frozen=True, slots=True)
class _Item:
    node: NodeInfo
    spiffe_id: str
    outcome: PlanOutcome
    plan: Plan | None
    digest: str | None
    snapshot_version: str | None
    errors: tuple[str, ...]
    rest: dict[str, Any] | None = None
    """``plan`` as JSON without its body (see :class:`_PlanTexts`)."""
    body: _Body | None = None


def _errors_by_node(findings: Sequence[Finding]) -> Callable[[str], tuple[str, ...]]:
    """For a node id: the texts of ``findings`` that name it or no node, in order, at most
    :data:`_MAX_ERRORS` (the findings are sorted out once, not once per node)."""
    general: list[tuple[int, str]] = []
    by_node: dict[str, list[tuple[int, str]]] = {}
    for index, finding in enumerate(findings):
        entry = (index, str(finding))
        if finding.node is None:
            general.append(entry)
        else:
            by_node.setdefault(finding.node, []).append(entry)

    def errors(node_id: str) -> tuple[str, ...]:
        merged: Iterator[tuple[int, str]] = heapq.merge(general, by_node.get(node_id, ()))
        return tuple(text for _index, text in itertools.islice(merged, _MAX_ERRORS))

    return errors


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True, slots=True)
class _Signer:
    key: ec.EllipticCurvePrivateKey
    chain_pem: str
    fingerprint: str


def _signer(key: ec.EllipticCurvePrivateKey, chain: Sequence[x509.Certificate]) -> _Signer:
    if not isinstance(key.curve, ec.SECP256R1) or not chain:
        raise ValueError("plan records are signed with an EC P-256 key and its chain")
    return _Signer(
        key,
        b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain).decode(),
        hashlib.sha256(chain[0].public_bytes(serialization.Encoding.DER)).hexdigest(),
    )


class PlanRecorder:
    """Appends plan records to ``store`` (see the module docstring).

    ``key`` (EC P-256) signs; ``chain`` (leaf first) is its certificate chain, stored
    once as the signer of these records. ``trust_domain`` names the nodes' SPIFFE IDs.
    :meth:`use_signer` moves signing to a renewed key without breaking the chain.
    """

    def __init__(
        self,
        store: AuditStore,
        *,
        chain_id: str,
        trust_domain: str,
        key: ec.EllipticCurvePrivateKey,
        chain: Sequence[x509.Certificate],
        max_plan_bytes: int = DEFAULT_MAX_PLAN_BYTES,
        clock: Callable[[], dt.datetime] = _utc_now,
    ) -> None:
        self._signer = _signer(key, chain)
        self._store = store
        self._chain_id = chain_id
        self._trust_domain = trust_domain
        self._max_plan_bytes = max_plan_bytes
        self._now = clock
        self._lock = asyncio.Lock()
        self._loaded = False
        self._next_seq = 0
        self._last_hash = GENESIS_HASH
        self._last: dict[str, tuple[str, str | None]] = {}

    @property
    def chain_id(self) -> str:
        return self._chain_id

    def use_signer(
        self, key: ec.EllipticCurvePrivateKey, chain: Sequence[x509.Certificate]
    ) -> None:
        """Sign every later record with ``key`` (its ``chain`` is stored with the first of
        them), e.g. after the server certificate was renewed; the chain of records goes on.
        Any thread; a record being appended keeps the signer it started with.

        Raises:
            ValueError: ``key`` is not EC P-256 or ``chain`` is empty.
        """
        self._signer = _signer(key, chain)

    def node_spiffe_id(self, node_id: str) -> str:
        """``spiffe://<trust-domain>/node/<node_id>``."""
        return f"spiffe://{self._trust_domain}/node/{node_id}"

    async def record(
        self,
        result: ReconcileResult,
        outcome: BundleOutcome,
        serving: Mapping[str, str],
    ) -> list[DecisionRecord]:
        """Record the plans of one reconcile whose evaluation ran (``outcome``), published
        or refused per ``result.ok``; ``serving`` maps node id → the snapshot version
        served after it. Returns the records appended (none when nothing changed).

        Raises:
            AuditStoreError: the database cannot be read or written (nothing recorded;
                the next reconcile tries again).
        """
        serving = dict(serving)
        async with self._lock:
            return await asyncio.to_thread(self._append, result, outcome, serving)

    def _items(
        self, result: ReconcileResult, outcome: BundleOutcome, serving: Mapping[str, str]
    ) -> list[_Item]:
        kind: PlanOutcome = "published" if result.ok else "refused"
        errors = _errors_by_node(result.errors if not result.ok else ())
        texts = _PlanTexts()
        items = []
        for node in outcome.nodes:
            plan = outcome.plans.get(node.id)
            snapshot = outcome.snapshots.get(node.id) if result.ok else None
            version = snapshot.version if snapshot is not None else serving.get(node.id)
            item = _Item(
                node, self.node_spiffe_id(node.id), kind, plan, None, version, errors(node.id)
            )
            if plan is not None:
                rest, body = texts.split(plan)
                item = replace(item, digest=texts.digest(rest, body), rest=rest, body=body)
            items.append(item)
        return items

    # -- on the worker thread ---------------------------------------------------------

    def _load(self) -> None:
        last = self._store.last_in_chain(self._chain_id)
        if last is not None:
            self._next_seq = last.record.seq + 1
            self._last_hash = last.record.hash
        for node, stored in self._store.latest_by_node(self._chain_id).items():
            result = stored.record.result
            if isinstance(result, dict):
                self._last[node] = (str(result.get("outcome")), result.get("plan_sha256"))
        self._loaded = True

    def _append(
        self, result: ReconcileResult, outcome: BundleOutcome, serving: Mapping[str, str]
    ) -> list[DecisionRecord]:
        items = self._items(result, outcome, serving)
        signer = self._signer
        if not self._loaded:
            self._load()
        now = self._now()
        seq, prev = self._next_seq, self._last_hash
        records: list[DecisionRecord] = []
        bodies: dict[str, str] = {}
        for item in items:
            if self._last.get(item.spiffe_id) == (item.outcome, item.digest):
                continue
            record = self._sealed(result, item, signer, seq=seq, prev_hash=prev, now=now)
            records.append(record)
            seq, prev = seq + 1, record.hash
            body = item.body
            if body is not None and self._keeps(body):
                bodies[body.sha256] = body.text
        if not records:
            return []
        self._store.insert(
            [(r, signer.fingerprint) for r in records],
            {signer.fingerprint: signer.chain_pem},
            chain=self._chain_id,
            plan_bodies=bodies,
        )
        self._next_seq, self._last_hash = seq, prev
        for item in items:
            self._last[item.spiffe_id] = (item.outcome, item.digest)
        return records

    def _keeps(self, body: _Body) -> bool:
        return body.size <= self._max_plan_bytes

    def _result(self, result: ReconcileResult, item: _Item) -> dict[str, Any]:
        plan = item.plan
        body: dict[str, Any] = {
            "outcome": item.outcome,
            "plan_sha256": item.digest,
            "plan_body_sha256": None,
            "plan_body_stored": False,
            "plan": None,
            "summary": None,
            "bundle": result.bundle_revision,
            "provenance": dict(result.provenance),
        }
        if plan is not None and item.body is not None:
            body["plan_body_sha256"] = item.body.sha256
            body["plan_body_stored"] = self._keeps(item.body)
            body["plan"] = item.rest
            body["summary"] = _summary(plan)
        if item.outcome == "refused":
            body["errors"] = list(item.errors)
        return body

    def _sealed(
        self,
        result: ReconcileResult,
        item: _Item,
        signer: _Signer,
        *,
        seq: int,
        prev_hash: str,
        now: dt.datetime,
    ) -> DecisionRecord:
        body = self._result(result, item)
        record = DecisionRecord(
            decision_id=uuid.uuid4(),
            path=PLAN_RECORD_PATH,
            input=PlanInput(node=item.node).model_dump(mode="json"),
            result=body,
            timestamp=now,
            bundle_revision=result.bundle_sha256 or None,
            etcd_revision=result.etcd_revision,
            snapshot_version=item.snapshot_version,
            node_spiffe_id=item.spiffe_id,
            kind="plan",
            seq=seq,
            prev_hash=prev_hash,
            hash=GENESIS_HASH,
            signature="",
        )
        digest = hashlib.sha256(canonical_bytes(record)).digest()
        signature = signer.key.sign(digest, _ECDSA_PREHASHED)
        return record.model_copy(
            update={"hash": digest.hex(), "signature": base64.b64encode(signature).decode()}
        )
