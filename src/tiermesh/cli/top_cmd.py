"""``tiermesh top``: the dashboard's live figures in the terminal.

Reads the dashboard document (:mod:`tiermesh.controlplane.dashboard.view`) from
``<dashboard>/api/dashboard`` every ``--interval`` seconds and redraws it with rich's
``Live``: tier use and fallback rate (since start and recent), nodes with health, SVID and
xDS ACK/NACK state, tenants' spend against budget, recent decisions with the audit chain's
``verify`` state, and the served policy revision.

Where it reads: ``--dashboard URL`` (with ``--token-file`` for a dashboard beyond
loopback), else the running ``tiermesh up``'s dashboard (its state file,
:mod:`tiermesh.cli.up_state`); ``--admin URL`` reads a control plane without a dashboard
(its status document: no decisions). Nothing found: one ``error:`` line saying so, exit 1.

Keys: ``q`` quits (the terminal is put in cbreak mode while it runs and restored after);
Ctrl-C quits too, exit 0 either way. ``--once`` prints one frame without redrawing or
reading keys (for scripts and pipes); exit 1 if the source cannot be read.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import select
import sys
import termios
import time
import tty
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from tiermesh.cli.status_cmd import fetch_status
from tiermesh.cli.up_state import NotRunning, read_running
from tiermesh.controlplane.dashboard import (
    AuditSummary,
    DashboardError,
    dashboard_document,
    read_token_file,
)

__all__ = ["fetch_view", "render_view", "top"]

_TIERS = ("local", "private", "cloud")


def fetch_view(url: str, *, token: str | None = None, timeout_s: float = 5.0) -> dict[str, Any]:
    """GET ``<url>/api/dashboard`` and return its ``view``.

    Raises:
        OSError: unreachable or an HTTP error status.
        ValueError: not a dashboard answer.
    """
    target = url.rstrip("/") + "/api/dashboard"
    request = urllib.request.Request(target)  # noqa: S310 - http(s) only, checked below
    if not target.startswith(("http://", "https://")):
        raise ValueError(f"not an http(s) URL: {url}")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=timeout_s) as answer:  # noqa: S310
        document = json.loads(answer.read())
    if not isinstance(document, dict) or not isinstance(document.get("view"), dict):
        raise ValueError(f"{target} did not answer with a dashboard document")
    return dict(document["view"])


def _pct(value: Any) -> str:
    return "—" if value is None else f"{100.0 * float(value):.1f}%"


def _traffic(view: dict[str, Any]) -> Table:
    traffic = view.get("traffic") or {}
    table = Table(title="Tier use", title_justify="left", expand=True)
    for column in ("", "answers", *_TIERS, "first", "fallback", "fallback rate", "refused"):
        table.add_column(column, justify="left" if not column else "right")
    for label, key in (("since start", "total"), (f"last {traffic.get('recent_minutes', 5)} min",
                                                   "recent")):  # fmt: skip
        figures = traffic.get(key) or {}
        by_tier = figures.get("by_tier") or {}
        table.add_row(
            label,
            str(figures.get("answers", 0)),
            *(str(by_tier.get(t, 0)) for t in _TIERS),
            str(figures.get("first_choice", 0)),
            str(figures.get("fallback", 0)),
            _pct(figures.get("fallback_rate")),
            str(figures.get("refused_total", 0)),
        )
    reasons = (traffic.get("total") or {}).get("fallback_reasons") or {}
    if reasons:
        table.caption = "fallback: " + ", ".join(f"{k} {v}" for k, v in sorted(reasons.items()))
    return table


def _nodes(view: dict[str, Any]) -> Table:
    table = Table(title="Mesh", title_justify="left", expand=True)
    for column in ("node", "tier", "health", "SVID", "xDS", "answers", "fallback"):
        table.add_column(column)
    for node in view.get("nodes") or ():
        xds = " ".join(f"{r['type'][:3]}:{r['state']}" for r in node.get("xds") or ())
        health = node.get("health", "unknown")
        style = {"healthy": "green", "unhealthy": "red"}.get(health, "yellow")
        table.add_row(
            Text(str(node.get("id"))),
            Text(str(node.get("tier") or "—")),
            Text(health, style=style),
            Text(str(node.get("svid"))),
            Text(xds or "—"),
            str(node.get("answers", 0)),
            str(node.get("fallback", 0)),
        )
    return table


def _tenants(view: dict[str, Any]) -> Table:
    table = Table(title="Spend vs budget", title_justify="left", expand=True)
    for column in ("tenant", "spent", "budget", "used", "state"):
        table.add_column(column)
    for tenant in view.get("tenants") or ():
        budget = tenant.get("budget_usd")
        used = tenant.get("used_pct")
        exhausted = bool(tenant.get("exhausted"))
        table.add_row(
            Text(str(tenant.get("name"))),
            f"${float(tenant.get('spent_usd') or 0):.6f}",
            "—" if budget is None else f"${float(budget):.6f}",
            "—" if used is None else f"{used}%",
            Text("exhausted" if exhausted else "ok", style="red" if exhausted else "green"),
        )
    return table


def _decisions(view: dict[str, Any], limit: int) -> Table:
    audit = view.get("audit") or {}
    ok = audit.get("ok")
    if ok is None:
        state = Text("audit verify: not yet", style="yellow")
    elif ok:
        state = Text(f"audit verify: ok ({audit.get('checked')} records)", style="green")
    else:
        state = Text("audit verify: FAILED " + "; ".join(audit.get("problems") or ()), style="red")
    table = Table(title="Recent decisions", title_justify="left", caption=state, expand=True)
    columns = ("time", "node", "tenant", "sensitivity", "tier", "outcome", "reason")
    for column in columns:
        table.add_column(column, overflow="fold" if column == "reason" else "ellipsis")
    for row in (view.get("decisions") or ())[:limit]:
        table.add_row(*(Text("—" if row.get(c) is None else str(row.get(c))) for c in columns))
    return table


def render_view(view: dict[str, Any], *, decisions: int = 8) -> Group:
    """One frame of ``top`` for a dashboard document. Every value is shown as plain
    ``Text`` (never parsed as rich markup)."""
    policy = view.get("policy") or {}
    provenance = policy.get("provenance") or {}
    origin = " ".join(f"{k}={v}" for k, v in sorted(provenance.items()))
    header = Text.assemble(
        ("tiermesh top", "bold"),
        f"  {view.get('trust_domain') or ''}  policy revision {policy.get('revision')} ",
        (origin, "dim"),
        f"  · {view.get('generated_at', '')}",
    )
    return Group(
        Panel(header),
        _traffic(view),
        _nodes(view),
        _tenants(view),
        _decisions(view, decisions),
    )


@contextlib.contextmanager
def _keys() -> Iterator[int | None]:
    """cbreak mode on stdin while it is a terminal; yields its fd (None: no terminal)."""
    if not sys.stdin.isatty():
        yield None
        return
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield fd
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _quit_pressed(fd: int | None, wait_s: float) -> bool:
    """Wait up to ``wait_s`` for a key; True when it is ``q``."""
    if fd is None:
        time.sleep(wait_s)
        return False
    deadline = time.monotonic() + wait_s
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([fd], [], [], left)
        if ready and os.read(fd, 1) in (b"q", b"Q"):
            return True
    return False


def _source(
    dashboard: str | None, admin: str | None, token_file: Path | None
) -> tuple[str, str | None, bool]:
    """(url, token, is_dashboard)."""
    token = None
    if token_file is not None:
        try:
            token = read_token_file(token_file)
        except DashboardError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(code=1) from exc
    if dashboard is not None:
        return dashboard, token, True
    if admin is not None:
        return admin, token, False
    try:
        state = read_running()
    except NotRunning as exc:
        typer.echo(f"error: {exc}; give --dashboard URL or --admin URL", err=True)
        raise typer.Exit(code=1) from exc
    if state.dashboard_url:
        return state.dashboard_url, token, True
    return state.admin_url, token, False


def _read(url: str, token: str | None, is_dashboard: bool) -> dict[str, Any]:
    if is_dashboard:
        return fetch_view(url, token=token)
    return dashboard_document(fetch_status(url), AuditSummary(), now=dt.datetime.now(dt.UTC))


def top(
    dashboard: Annotated[
        str | None,
        typer.Option("--dashboard", help="Dashboard URL (default: the running `tiermesh up`'s)."),
    ] = None,
    admin: Annotated[
        str | None,
        typer.Option("--admin", help="Read a control plane's admin URL instead (no decisions)."),
    ] = None,
    token_file: Annotated[
        Path | None, typer.Option("--token-file", help="Token of a dashboard beyond loopback.")
    ] = None,
    interval: Annotated[float, typer.Option("--interval", help="Seconds between redraws.")] = 2.0,
    once: Annotated[bool, typer.Option("--once", help="Print one frame and exit.")] = False,
) -> None:
    """Live tier use, fallback rate, nodes, spend and decisions in the terminal (q quits)."""
    if interval <= 0:
        raise typer.BadParameter("must be above 0", param_hint="--interval")
    url, token, is_dashboard = _source(dashboard, admin, token_file)
    try:
        view = _read(url, token, is_dashboard)
    except (OSError, ValueError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        typer.echo(f"error: cannot read {url}: {reason}", err=True)
        raise typer.Exit(code=1) from exc
    console = Console() if sys.stdout.isatty() else Console(width=160)
    if once:
        console.print(render_view(view))
        return
    from rich.live import Live  # noqa: PLC0415 - only the live mode needs it

    try:
        with _keys() as fd, Live(render_view(view), console=console, screen=True) as live:
            while not _quit_pressed(fd, interval):
                try:
                    view = _read(url, token, is_dashboard)
                except (OSError, ValueError) as exc:
                    view = {**view, "generated_at": f"stale: {exc}"}
                live.update(render_view(view))
    except KeyboardInterrupt:
        pass
