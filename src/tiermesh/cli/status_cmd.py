"""``tiermesh status``: what a running control plane serves, read from its admin server.

Reads ``<admin>/status`` (see ``tiermesh.controlplane.runtime.status``). ``--json`` prints
the document as is (``nodes[].inference_url`` is each node's app-facing base URL); otherwise
a table per node: SPIFFE ID, health, xDS state per type (ACKed version, or what is pending
or NACKed), route summary and inference URL; then each tenant's mesh-wide spend against its
monthly budget (``tenants``). Exit 1 with one ``error:`` line when the admin
server cannot be reached.

Without ``--admin`` it reads the control plane of the running ``tiermesh up`` (its state
file, :mod:`tiermesh.cli.up_state`), else the default admin address, and says so when
neither answers.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from tiermesh.cli.up_state import NotRunning, read_running

__all__ = ["DEFAULT_ADMIN", "fetch_status", "find_admin", "identity_line", "status"]

DEFAULT_ADMIN = "http://127.0.0.1:18003"
_TYPES = ("listeners", "routes", "clusters", "endpoints", "secrets")


def fetch_status(admin: str, *, timeout_s: float = 5.0) -> dict[str, Any]:
    """GET ``<admin>/status`` and decode it.

    Raises:
        OSError: unreachable, or an HTTP error status (``urllib.error.URLError``).
        ValueError: the answer is not a JSON object.
    """
    url = admin.rstrip("/") + "/status"
    if not url.startswith(("http://", "https://")):
        url = "http://" + url
    with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - http(s) only
        document = json.loads(response.read())
    if not isinstance(document, dict):
        raise ValueError(f"{url} did not answer with a JSON object")
    return document


def _short(version: str) -> str:
    return version[:8] if version else "-"


def _xds_cell(xds: dict[str, Any]) -> str:
    types: dict[str, Any] = xds.get("types", {})
    if not types:
        return "connected, nothing sent" if xds.get("connected") else "[dim]not connected[/dim]"
    parts = []
    for name in _TYPES:
        state = types.get(name)
        if state is None:
            continue
        sent, acked = state.get("sent", ""), state.get("acked", "")
        if state.get("last_nack") and acked != sent:
            mark = f"[red]NACK {_short(sent)}[/red]"
        elif sent and sent == acked:
            mark = f"[green]{_short(acked)}[/green]"
        else:
            mark = f"[yellow]{_short(acked)}→{_short(sent)}[/yellow]"
        parts.append(f"{name[:3]} {mark}")
    prefix = "" if xds.get("connected") else "[dim](disconnected)[/dim] "
    return prefix + "\n".join(parts)


def _routes_cell(snapshot: dict[str, Any] | None) -> str:
    if snapshot is None:
        return "[dim]no snapshot[/dim]"
    return f"{snapshot['routes']} routes, {snapshot['clusters']} clusters"


def _health_cell(node: dict[str, Any]) -> str:
    colour = {"healthy": "green", "unhealthy": "red"}.get(node["health"], "dim")
    text = f"[{colour}]{node['health']}[/{colour}]"
    load = node.get("load")
    if load:
        text += (
            f"\n{load['in_flight']} in flight, {load['queue_depth']} queued, "
            f"{load.get('tokens_per_s', 0.0):.1f} tok/s"
        )
        text += _model_line(load.get("model"))
    return text


def _model_line(model: dict[str, Any] | None) -> str:
    """The model's signature check: digest and signer, or why it is not served."""
    if not model:
        return ""
    if model.get("outcome") == "refused":
        return f"\n[red]model refused: {model.get('reason')}[/red]"
    if model.get("outcome") == "unverified":
        return "\nmodel unsigned (no signature demanded)"
    digest = str(model.get("digest") or "")
    signer = str(model.get("signer") or "")
    if signer.startswith("key:sha256:"):
        signer = signer[:27] + "…"  # the key's hash; --json has it whole
    return f"\nmodel {digest[:19]}… signed by {signer}"


def _leadership_line(leadership: dict[str, Any]) -> str:
    """Whether the replica asked leads, and who does."""
    if leadership.get("leader"):
        return f"this replica ({leadership.get('holder')}) leads, term {leadership.get('term')}"
    current = leadership.get("current_leader") or "nobody yet"
    return f"this replica ({leadership.get('holder')}) follows; leader: {current}"


def identity_line(identity: dict[str, Any] | None) -> str | None:
    """The control plane's own certificate and trust bundle in one line (the status
    document's ``identity``), or None when it has none (an older control plane)."""
    if not identity:
        return None
    cert = identity["server_certificate"]
    bundle = identity["trust_bundle"]
    return (
        f"server certificate {cert['serial'][:12]}… until {cert['not_after']} (renews at"
        f" {cert['renew_at']}, {cert['renewals']} renewals) · trust bundle of CA state"
        f" {bundle['generation']}, {len(bundle['roots'])} root(s)"
    )


def _render(document: dict[str, Any], console: Console) -> None:
    bundle = document.get("bundle", {})
    reconcile = document.get("reconcile", {})
    provenance = bundle.get("provenance") or {}
    origin = ", ".join(f"{k}={v}" for k, v in sorted(provenance.items())) or "no provenance"
    console.print(
        f"trust domain [bold]{document.get('trust_domain')}[/bold] · bundle revision "
        f"[bold]{bundle.get('revision', 0)}[/bold] ({_short(bundle.get('sha256', ''))}; {origin})"
    )
    if (line := identity_line(document.get("identity"))) is not None:
        console.print(line, highlight=False)
    if reconcile.get("last_error"):
        console.print(f"[red]last reconcile refused:[/red] {reconcile['last_error']}")
    if (leadership := document.get("leadership")) is not None:
        console.print(_leadership_line(leadership), markup=False)
    etcd = document.get("etcd")
    if etcd is not None and not etcd.get("reachable", True):
        console.print(
            f"[red]cut off from etcd[/red] for {etcd.get('last_answer_s_ago')} s"
            f" ({etcd.get('problem')}): its nodes were sent to the other replicas"
        )
    table = Table(show_lines=True)
    for column in ("node", "SPIFFE ID", "health", "xDS (acked)", "routes"):
        table.add_column(column)
    table.add_column("inference URL", no_wrap=True)
    for node in document.get("nodes", []):
        table.add_row(
            node["id"] + ("" if node["registered"] else "\n[dim]unregistered[/dim]"),
            node["spiffe_id"],
            _health_cell(node),
            _xds_cell(node.get("xds", {})),
            _routes_cell(node.get("snapshot")),
            node.get("inference_url") or "-",
        )
    if document.get("nodes"):
        console.print(table)
    else:
        console.print("no nodes registered or connected")
    _render_tenants(document.get("tenants", []), console)


def _render_tenants(tenants: list[dict[str, Any]], console: Console) -> None:
    if not tenants:
        return
    table = Table(title="spend this month (all nodes)")
    for column in ("tenant", "spent USD", "budget USD", "state"):
        table.add_column(column)
    for tenant in tenants:
        budget = tenant.get("budget_usd")
        state = (
            "[yellow]budget spent: cheap tiers first[/yellow]"
            if tenant.get("exhausted")
            else ("not in catalog" if budget is None else "within budget")
        )
        table.add_row(
            tenant["name"],
            f"{tenant.get('spent_usd', 0.0):.6f}",
            "-" if budget is None else f"{budget:g}",
            state,
        )
    console.print(table)


def find_admin(admin: str | None) -> tuple[str, NotRunning | None]:
    """The admin URL to read: ``admin`` if given, else the running ``tiermesh up``'s (its
    state file), else :data:`DEFAULT_ADMIN` together with why no ``up`` was found."""
    if admin is not None:
        return admin, None
    try:
        return read_running().admin_url, None
    except NotRunning as exc:
        return DEFAULT_ADMIN, exc


def status(
    admin: Annotated[
        str | None,
        typer.Option(
            "--admin",
            help="The control plane's admin URL (default: the running `tiermesh up`'s, else "
            f"{DEFAULT_ADMIN}).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw JSON document.")] = False,
) -> None:
    """Show nodes, their SPIFFE IDs, health, xDS state and routes, and tenants' spend."""
    url, missing = find_admin(admin)
    try:
        document = fetch_status(url)
    except (OSError, ValueError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        typer.echo(f"error: cannot read status from {url}: {reason}", err=True)
        if missing is not None:
            typer.echo(f"  {missing}; give --admin URL for another control plane", err=True)
        raise typer.Exit(code=1) from exc
    if as_json:
        typer.echo(json.dumps(document, indent=2, sort_keys=True))
    else:
        # Piped output is not cut to 80 columns: URLs and IDs stay whole for grep.
        console = Console() if sys.stdout.isatty() else Console(width=200)
        _render(document, console)
