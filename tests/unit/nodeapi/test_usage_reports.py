"""Usage reports on the registry session, over real mTLS gRPC and a MemoryStore: counters
add up, a re-sent report counts once, a bad report is refused and counts nothing."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest

from tests.support.svids import node_api_channel
from tiermesh.controlplane.api import (
    AnswerCounts,
    NodeRegistration,
    SessionMessage,
    SessionReply,
    UsageDelta,
    UsageReport,
    registry_method_path,
)
from tiermesh.controlplane.identity import CaConfig, LocalCertificateAuthority
from tiermesh.controlplane.identity.server_cert import issue_server_certificate
from tiermesh.controlplane.identity.tokens import JoinTokens
from tiermesh.controlplane.nodeapi import (
    NodeApiServer,
    NodeIdentityService,
    NodeRegistryService,
    start_node_api,
)
from tiermesh.controlplane.store import MemoryStore, Usage

TD = "mesh.example"
DECEMBER = dt.datetime(2026, 12, 31, 23, 59, tzinfo=dt.UTC)
Call = grpc.aio.StreamStreamCall[SessionMessage, SessionReply]


@dataclass
class Wall:
    """The registry service's clock (it picks the month of a report that names none)."""

    now: dt.datetime = DECEMBER

    def __call__(self) -> dt.datetime:
        return self.now


@dataclass
class Rig:
    ca: LocalCertificateAuthority
    store: MemoryStore
    service: NodeRegistryService
    api: NodeApiServer
    wall: Wall

    def channel(self, node_id: str) -> grpc.aio.Channel:
        return node_api_channel(self.ca, self.api, TD, node_id)


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    ca = LocalCertificateAuthority.create(CaConfig(TD))
    store = MemoryStore()
    wall = Wall()
    service = NodeRegistryService(store, TD, load_interval_s=0.05, clock=wall)
    api = await start_node_api(
        NodeIdentityService(ca, JoinTokens(store)),
        certificate=issue_server_certificate(ca, now=dt.datetime.now(dt.UTC)),
        bundle=ca.bundle(),
        registry=service,
    )
    try:
        yield Rig(ca, store, service, api, wall)
    finally:
        await api.stop(grace=None)
        await store.aclose()


def registration(node_id: str) -> SessionMessage:
    return SessionMessage(
        registration=NodeRegistration(
            node_id=node_id, tier="local", region="eu-west", app_port=18080
        )
    )


def usage(
    seq: int, epoch: str = "e1", month: str | None = None, **tenants: tuple[int, int]
) -> SessionMessage:
    return SessionMessage(
        usage=UsageReport(
            epoch=epoch,
            seq=seq,
            month=month,
            tenants={t: UsageDelta(tokens=a, cost_micro=b) for t, (a, b) in tenants.items()},
        )
    )


def open_session(channel: grpc.aio.Channel, *, raw: bool = False) -> Call:
    method = channel.stream_stream(
        registry_method_path(),
        request_serializer=(lambda b: b) if raw else (lambda m: m.model_dump_json().encode()),
        response_deserializer=SessionReply.model_validate_json,
    )
    return method()  # type: ignore[return-value]


async def reply(call: Call) -> SessionReply:
    answer = await call.read()
    assert isinstance(answer, SessionReply)
    return answer


async def test_reports_of_two_nodes_add_up_and_are_answered_with_mesh_totals(rig: Rig) -> None:
    async with rig.channel("edge-1") as one, rig.channel("edge-2") as two:
        first, second = open_session(one), open_session(two)
        for call, node in ((first, "edge-1"), (second, "edge-2")):
            await call.write(registration(node))
            registered = await reply(call)
            assert registered.usage_reports is True
            assert registered.usage is None

        await first.write(usage(1, acme=(100, 4000)))
        ack = (await reply(first)).usage
        assert ack is not None
        assert (ack.seq, ack.applied, ack.month) == (1, True, "2026-12")
        assert ack.totals["acme"].cost_micro == 4000

        await second.write(usage(1, acme=(50, 1000), initech=(10, 7)))
        answer = await reply(second)
        assert answer.node_id == "edge-2"  # the registration's answer, repeated
        assert answer.usage is not None
        assert {t: (v.tokens, v.cost_micro) for t, v in answer.usage.totals.items()} == {
            "acme": (150, 5000),
            "initech": (10, 7),
        }
        for call in (first, second):
            await call.write(SessionMessage(goodbye=True))
            assert await call.code() == grpc.StatusCode.OK
    assert await rig.store.get_usage("acme", month="2026-12") == Usage("acme", 150, 5000)


async def test_a_re_sent_report_counts_once_even_on_a_new_session(rig: Rig) -> None:
    for attempt in range(2):
        async with rig.channel("edge-1") as channel:
            call = open_session(channel)
            await call.write(registration("edge-1"))
            await reply(call)
            await call.write(usage(1, acme=(10, 100)))
            ack = (await reply(call)).usage
            assert ack is not None
            assert ack.applied is (attempt == 0)
            assert ack.totals["acme"].cost_micro == 100
            await call.write(usage(2, acme=(0, 0)))  # zeros: read only
            assert (await reply(call)).usage.totals["acme"].cost_micro == 100  # type: ignore[union-attr]
    # A new epoch (the agent restarted) starts counting again.
    async with rig.channel("edge-1") as channel:
        call = open_session(channel)
        await call.write(registration("edge-1"))
        await reply(call)
        await call.write(usage(1, "e2", acme=(1, 1)))
        assert (await reply(call)).usage.applied is True  # type: ignore[union-attr]
    assert await rig.store.get_usage("acme", month="2026-12") == Usage("acme", 11, 101)


async def test_reports_are_charged_to_their_month_across_the_boundary(rig: Rig) -> None:
    async with rig.channel("edge-1") as channel:
        call = open_session(channel)
        await call.write(registration("edge-1"))
        await reply(call)
        await call.write(usage(1, month="2026-12", acme=(10, 900)))
        december = (await reply(call)).usage
        assert december is not None
        assert (december.month, december.totals["acme"].cost_micro) == ("2026-12", 900)

        rig.wall.now = DECEMBER + dt.timedelta(minutes=2)  # 2027-01-01 00:01 UTC
        # Spend of the new month starts at zero ...
        await call.write(usage(2, month="2027-01", acme=(1, 5)))
        january = (await reply(call)).usage
        assert january is not None
        assert (january.month, january.totals["acme"].cost_micro) == ("2027-01", 5)
        # ... a report of December sent after the boundary is December's ...
        await call.write(usage(3, month="2026-12", acme=(1, 100)))
        late = (await reply(call)).usage
        assert late is not None
        assert (late.month, late.totals["acme"].cost_micro) == ("2026-12", 1000)
        # ... and one naming no month (an older agent) is the control plane's month's.
        await call.write(usage(4, acme=(1, 1)))
        unnamed = (await reply(call)).usage
        assert unnamed is not None
        assert (unnamed.month, unnamed.totals["acme"].cost_micro) == ("2027-01", 6)
        await call.write(SessionMessage(goodbye=True))
        assert await call.code() == grpc.StatusCode.OK
    assert await rig.store.get_usage("acme", month="2026-12") == Usage("acme", 11, 1000)
    assert await rig.store.get_usage("acme", month="2027-01") == Usage("acme", 2, 6)


@pytest.mark.parametrize(
    "payload",
    [
        b'{"usage": {"epoch": "e1", "seq": 1, "tenants": {"acme": {"cost_micro": 5},'
        b' "": {"tokens": 1}}}}',
        b'{"usage": {"epoch": "e1", "seq": 1, "tenants": {"acme": {"cost_micro": -5}}}}',
        b'{"usage": {"epoch": "e1", "seq": 1, "tenants": {}}}',
        b'{"usage": {"epoch": "e1", "seq": 1, "tenants": {'
        + b", ".join(b'"t%d": {"tokens": 1}' % i for i in range(257))
        + b"}}}",
        b'{"usage": {"epoch": "e1", "seq": 1, "month": "2026-13", "tenants": {"acme": {}}}}',
    ],
    ids=["empty-tenant", "negative", "no-tenants", "too-many", "bad-month"],
)
async def test_a_bad_report_is_refused_and_counts_nothing(rig: Rig, payload: bytes) -> None:
    async with rig.channel("edge-1") as channel:
        call = open_session(channel, raw=True)
        await call.write(registration("edge-1").model_dump_json().encode())
        await reply(call)
        await call.write(payload)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call.read()
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "usage" in (info.value.details() or "")
    assert (await rig.store.read_prefix("usage/")).entries == ()
    assert await rig.store.list_nodes() == ()  # the refusal ended the session


async def test_a_report_before_the_registration_is_refused(rig: Rig) -> None:
    async with rig.channel("edge-1") as channel:
        call = open_session(channel)
        await call.write(usage(1, acme=(1, 1)))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call.read()
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (await rig.store.read_prefix("usage/")).entries == ()


async def test_answer_counts_reach_the_callback_once_and_answers_alone_are_a_report(
    rig: Rig,
) -> None:
    seen: list[tuple[str, AnswerCounts]] = []
    rig.service.on_answers = lambda node, counts: seen.append((node, counts))
    counts = AnswerCounts(by_tier={"cloud": 2, "local": 1}, first_choice=2, fallback=1,
                          fallback_reasons={"retry": 1}, refused={"401": 1})  # fmt: skip
    answers_only = SessionMessage(usage=UsageReport(epoch="e1", seq=1, answers=counts))
    async with rig.channel("edge-1") as channel:
        call = open_session(channel)
        await call.write(registration("edge-1"))
        assert (await reply(call)).answer_reports is True
        await call.write(answers_only)
        first = (await reply(call)).usage
        await call.write(answers_only)  # a re-send: not counted again
        again = (await reply(call)).usage
        await call.write(SessionMessage(goodbye=True))
    assert first is not None
    assert first.applied
    assert first.totals == {}
    assert again is not None
    assert not again.applied
    assert seen == [("edge-1", counts)]


async def test_without_a_callback_the_reply_does_not_offer_answer_reports(rig: Rig) -> None:
    async with rig.channel("edge-1") as channel:
        call = open_session(channel)
        await call.write(registration("edge-1"))
        assert (await reply(call)).answer_reports is False
        await call.write(SessionMessage(goodbye=True))
