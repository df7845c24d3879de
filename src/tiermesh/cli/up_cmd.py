"""``tiermesh up``: the whole mesh on this machine until Ctrl-C (see
:mod:`tiermesh.demo.mesh` for what runs where).

Shows progress while things start, then prints the app endpoint (the edge node's app
listener), the dashboard URL and ready-to-paste curls, each with the demo API key of its tenant
(``authorization: Bearer tmk_…``: the mesh requires one, and the key, not a header, says
which tenant a request is). Ctrl-C or SIGTERM stops everything and leaves no
process behind (exit 0). While it runs, the state file of :mod:`tiermesh.cli.up_state`
names its admin URL, dashboard URL and audit database, for ``status``, ``top`` and
``audit``. A start failure stops what was started and prints
``tiermesh up failed: <cause>`` (exit 1).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import signal
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from tiermesh.cli.up_state import UpState, remove_state, write_state
from tiermesh.demo.mesh import (
    CASCADE_HEADERS,
    CLOUD_HEADERS,
    DEMO_HEADERS,
    TRIAL_BUDGET_USD,
    TRIAL_HEADERS,
    LocalMesh,
    MeshError,
)

__all__ = ["up"]


def up(
    port: Annotated[int, typer.Option("--port", help="The edge node's app listener port.")] = 10000,
    model: Annotated[
        str, typer.Option("--model", help="Local model: tiny (test GGUF) or smollm2.")
    ] = "tiny",
    state_dir: Annotated[
        Path | None,
        typer.Option(
            "--state-dir", help="Keep configs, logs and mesh.json here (else a temp dir)."
        ),
    ] = None,
    ha: Annotated[
        bool,
        typer.Option(
            "--ha",
            help="Run etcd as a 3-member cluster and two control-plane replicas (loopback).",
        ),
    ] = False,
) -> None:
    """Start etcd, the control plane and an edge/private/cloud mesh on 127.0.0.1 until Ctrl-C."""
    if model not in ("tiny", "smollm2"):
        raise typer.BadParameter(f"expected tiny or smollm2, got {model!r}", param_hint="--model")
    console = Console()
    mesh = LocalMesh(app_port=port, model=model, state_dir=state_dir, ha=ha)
    try:
        asyncio.run(_run(mesh, console))
    except MeshError as exc:
        console.print(f"[red]tiermesh up failed:[/red] {exc}", highlight=False)
        console.print("stopped; nothing left running.")
        raise typer.Exit(1) from exc


async def _run(mesh: LocalMesh, console: Console) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    with console.status("starting…") as status:
        done: list[str] = []

        def step(what: str) -> None:
            for finished in done:
                console.print(f"[green]✓[/green] {finished}", highlight=False)
            done[:] = [what]
            status.update(f"starting {what}…")

        starting = asyncio.create_task(mesh.start(step))
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({starting, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
            await mesh.stop()
            console.print("interrupted; stopped, nothing left running.")
            return
        stopper.cancel()
        starting.result()
        for finished in done:
            console.print(f"[green]✓[/green] {finished}", highlight=False)
    state = _record(mesh)
    _print_ready(mesh, console, state)
    try:
        await stop.wait()
    finally:
        remove_state(os.getpid())
        with console.status("stopping (agents drain and say goodbye)…"):
            await mesh.stop()
        console.print("stopped; nothing left running.")


def _record(mesh: LocalMesh) -> Path:
    """Leave the state file that ``status``, ``top`` and ``audit`` find the mesh by."""
    return write_state(
        UpState(
            pid=os.getpid(),
            started_at=dt.datetime.now(dt.UTC).isoformat(),
            admin_url=mesh.admin_url,
            dashboard_url=mesh.dashboard_url,
            audit_db=str(mesh.audit_db),
            state_dir=str(mesh.state_dir),
            etcd=mesh.etcd_endpoint if mesh.etcd is not None else None,
        )
    )


def _print_ready(mesh: LocalMesh, console: Console, state: Path) -> None:
    for node in mesh.nodes:
        model = f", llama.cpp on 127.0.0.1:{node.model_port}" if node.model else ""
        console.print(f"  {node.id:<11} {node.tier:<8} app {node.app_url}{model}", highlight=False)
    for index in range(mesh.replicas):
        name = "control plane" if mesh.replicas == 1 else f"control plane cp-{index + 1}"
        console.print(f"  {name} admin {mesh.replica_admin_url(index)}", highlight=False)
    if mesh.replicas > 1:
        databases = " ".join(f"--db {db}" for db in mesh.audit_dbs)
        console.print(
            f"  every replica's audit: tiermesh audit verify {databases}", highlight=False
        )
    console.print(f"\ntiermesh is up. App endpoint: [bold]{mesh.edge.app_url}[/bold]")
    console.print(f"Dashboard: [bold]{mesh.dashboard_url}[/bold]", highlight=False)
    console.print(
        f"Metrics (Prometheus): curl -s {mesh.edge.metrics_url}"
        f"  (control plane: curl -s {mesh.admin_url}/metrics)",
        soft_wrap=True,
        highlight=False,
    )
    console.print(
        f"`tiermesh status`, `tiermesh top` and `tiermesh audit` find this mesh through {state}",
        soft_wrap=True,
        highlight=False,
    )
    body = json.dumps({"model": "local", "max_tokens": 32,
                       "messages": [{"role": "user", "content": "hi"}]})  # fmt: skip
    for label, sent in (
        ("Send a request through the edge Envoy", DEMO_HEADERS),
        ("A public reasoning task goes to the cloud tier (x-tiermesh-tier: cloud)", CLOUD_HEADERS),
        (
            "The cascade task: the local answer unless it is less confident than the task's "
            "min_confidence (x-tiermesh-cascade-steps)",
            CASCADE_HEADERS,
        ),
        (
            f"Tenant initech's budget (${TRIAL_BUDGET_USD:g}) is spent after a few cloud "
            "answers; then the local tier answers",
            TRIAL_HEADERS,
        ),
    ):
        headers = " ".join(f"-H '{k}: {v}'" for k, v in mesh.with_key(sent).items())
        console.print(f"\n{label}:\n")
        console.print(
            f"  curl -si {mesh.edge.app_url}/v1/chat/completions "
            f"-H 'content-type: application/json' {headers} -d '{body}'",
            soft_wrap=True,
            highlight=False,
        )
    etcd = f"--etcd {mesh.etcd_endpoint}" if mesh.etcd is not None else ""
    console.print(
        f"\nEvery tenant has a demo API key (mesh.json: api_keys). Without one a request is "
        f"refused (401). List and revoke keys (a revoked key is refused within seconds):\n\n"
        f"  tiermesh key list {etcd}\n  tiermesh key revoke KEY_ID {etcd}",
        soft_wrap=True,
        highlight=False,
    )
    if mesh.nats is not None:
        auth = " ".join(f"-H '{k}: {v}'" for k, v in mesh.with_key(DEMO_HEADERS).items())
        console.print(
            "\nBulk work: the OpenAI Batch API on the same endpoint (each line decided like a "
            "request; restricted lines run on-prem only; queue on JetStream at "
            f"{mesh.nats.url}):\n\n"
            f"  curl -s {mesh.edge.app_url}/v1/files {auth} -F purpose=batch -F file=@in.jsonl\n"
            f"  curl -s {mesh.edge.app_url}/v1/batches {auth} -H 'content-type: application/json'"
            """ -d '{"input_file_id": "FILE_ID", "endpoint": "/v1/chat/completions"}'""",
            soft_wrap=True,
            highlight=False,
        )
    if mesh.cloud_control is not None:
        console.print(
            "\nMake the EU cloud slow (the local tier answers once its first byte is late), "
            "failing or down, and back:\n",
            highlight=False,
        )
        control = f"curl -s -X POST {mesh.cloud_control.url}/standins/frontier-eu -d"
        changes = ('{"first_byte_delay_s": 8}', '{"failure_status": 503}', '{"up": false}',
                   '{"up": true, "first_byte_delay_s": 0, "failure_status": null}')  # fmt: skip
        for change in changes:
            console.print(f"  {control} '{change}'", soft_wrap=True, highlight=False)
    console.print(
        "\nx-tiermesh-sensitivity: restricted (or PII in the body) never leaves the local and "
        "private tiers.\nPress Ctrl-C to stop.",
        highlight=False,
    )
