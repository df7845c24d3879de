"""Server-rendered HTML of the dashboard document (:mod:`.view`).

Every value from the document is escaped (:func:`html.escape`, quotes included) wherever it
lands, text or attribute: decision records, tenant and node names and policy provenance
are outside input. :func:`page` is the whole page (the first load works without
JavaScript); :func:`main` is its ``<main>`` content, which the page's script swaps in from
``/api/dashboard`` every few seconds. Pure functions.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping
from typing import Any, Final

__all__ = ["main", "page"]

_TIERS: Final = ("local", "private", "cloud")


def e(value: Any) -> str:
    """``value`` as escaped text (None as an em dash)."""
    return "—" if value is None else html.escape(str(value), quote=True)


def _usd(value: Any) -> str:
    return "—" if value is None else f"${float(value):.6f}"


def _pct(value: Any) -> str:
    return "—" if value is None else f"{100.0 * float(value):.1f}%"


def _row(cells: Iterable[str], cls: str = "") -> str:
    attr = f' class="{e(cls)}"' if cls else ""
    return f"<tr{attr}>" + "".join(cells) + "</tr>"


def _td(value: Any, figure: str | None = None, cls: str | None = None) -> str:
    attrs = f' data-figure="{e(figure)}"' if figure else ""
    attrs += f' class="{e(cls)}"' if cls else ""
    return f"<td{attrs}>{e(value)}</td>"


def _section(title: str, ident: str, body: str) -> str:
    return f'<section id="{e(ident)}"><h2>{e(title)}</h2>{body}</section>'


def _policy(view: Mapping[str, Any]) -> str:
    policy = view.get("policy") or {}
    provenance = policy.get("provenance") or {}
    items = "".join(
        f"<dt>{e(key)}</dt><dd>{e(value)}</dd>" for key, value in sorted(provenance.items())
    )
    sha = policy.get("sha256")
    return _section(
        "Policy",
        "policy",
        f'<p>revision <strong data-figure="policy-revision">{e(policy.get("revision"))}'
        f'</strong> · sha256 <code title="{e(sha)}">{e((sha or "")[:12] or None)}</code></p>'
        f'<dl class="provenance">{items or "<dt>provenance</dt><dd>none recorded</dd>"}</dl>',
    )


def _xds_cell(rows: Iterable[Mapping[str, Any]]) -> str:
    badges = "".join(
        f'<span class="xds {e(str(r.get("state")).lower())}" title="sent {e(r.get("sent"))},'
        f' acked {e(r.get("acked"))}, {e(r.get("nacks"))} NACK(s)">'
        f"{e(r.get('type'))} {e(r.get('state'))}</span>"
        for r in rows
    )
    return f"<td>{badges or '—'}</td>"


def _svid_cell(node: Mapping[str, Any]) -> str:
    """The SVID state and, when this replica issued it, when it expires (UTC)."""
    state = node.get("svid")
    expires = node.get("svid_expires_at")
    when = str(expires)[:16].replace("T", " ")
    until = "" if not expires else f"<br><small>until {e(when)} UTC</small>"
    return f'<td class="svid {e(state)}">{e(state)}{until}</td>'


def _nodes(view: Mapping[str, Any]) -> str:
    head = (
        "<tr><th>node</th><th>tier</th><th>region</th><th>health</th><th>SVID</th>"
        "<th>xDS (ACK / NACK)</th><th>answers</th><th>fallback</th></tr>"
    )
    rows = [
        _row(
            [
                f'<td title="{e(n.get("spiffe_id"))}">{e(n.get("id"))}</td>',
                _td(n.get("tier")),
                _td(n.get("region")),
                _td(n.get("health"), cls=f"health {n.get('health')}"),
                _svid_cell(n),
                _xds_cell(n.get("xds") or ()),
                _td(n.get("answers"), figure=f"node-answers-{n.get('id')}"),
                _td(n.get("fallback"), figure=f"node-fallback-{n.get('id')}"),
            ]
        )
        for n in view.get("nodes") or ()
    ]
    table = f'<table class="nodes"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'
    if not rows:
        table = "<p>No node has registered.</p>"
    return _section("Mesh", "mesh", table)


def _figures(name: str, figures: Mapping[str, Any]) -> str:
    by_tier = figures.get("by_tier") or {}
    cells = [
        _td(figures.get("answers", 0), figure=f"{name}-answers"),
        *(_td(by_tier.get(tier, 0), figure=f"{name}-tier-{tier}") for tier in _TIERS),
        _td(figures.get("first_choice", 0), figure=f"{name}-first"),
        _td(figures.get("fallback", 0), figure=f"{name}-fallback"),
        _td(_pct(figures.get("fallback_rate")), figure=f"{name}-fallback-rate"),
        _td(figures.get("refused_total", 0), figure=f"{name}-refused"),
    ]
    return "".join(cells)


def _reasons(figures: Mapping[str, Any]) -> str:
    reasons = figures.get("fallback_reasons") or {}
    refused = figures.get("refused") or {}
    parts = [
        f'<li>fallback: {e(k)} <span data-figure="reason-{e(k)}">{e(v)}</span></li>'
        for k, v in sorted(reasons.items())
    ] + [
        f'<li>refused: HTTP {e(k)} <span data-figure="refused-{e(k)}">{e(v)}</span></li>'
        for k, v in sorted(refused.items())
    ]
    return f'<ul class="reasons">{"".join(parts)}</ul>' if parts else ""


def _minutes(traffic: Mapping[str, Any]) -> str:
    minutes = list(traffic.get("minutes") or ())[-30:]
    if not minutes:
        return ""
    peak = max(1, *(int(m.get("answers", 0)) + int(m.get("refused_total", 0)) for m in minutes))
    bars = []
    for m in minutes:
        by_tier = m.get("by_tier") or {}
        segments = "".join(
            f'<span class="seg {tier}" style="height:{100 * by_tier.get(tier, 0) / peak:.0f}%">'
            "</span>"
            for tier in _TIERS
        )
        label = f"{m.get('minute', '')[11:16]}: {m.get('answers', 0)} answers"
        bars.append(f'<div class="bar" title="{e(label)}">{segments}</div>')
    legend = "".join(f'<span class="key {tier}">{tier}</span>' for tier in _TIERS)
    return (
        f'<p class="legend">answers per minute, last {len(minutes)} min: {legend}</p>'
        f'<div class="minutes" aria-label="answers per minute">{"".join(bars)}</div>'
    )


def _traffic(view: Mapping[str, Any]) -> str:
    traffic = view.get("traffic") or {}
    head = (
        "<tr><th></th><th>answers</th>"
        + "".join(f"<th>{t}</th>" for t in _TIERS)
        + "<th>first choice</th><th>fallback</th><th>fallback rate</th><th>refused</th></tr>"
    )
    recent = f"last {e(traffic.get('recent_minutes', 5))} min"
    body = (
        f"<tr><th>since start</th>{_figures('total', traffic.get('total') or {})}</tr>"
        f"<tr><th>{recent}</th>{_figures('recent', traffic.get('recent') or {})}</tr>"
    )
    return _section(
        "Tier use",
        "traffic",
        f'<table class="traffic"><thead>{head}</thead><tbody>{body}</tbody></table>'
        + _reasons(traffic.get("total") or {})
        + _minutes(traffic),
    )


def _tenants(view: Mapping[str, Any]) -> str:
    rows = []
    for t in view.get("tenants") or ():
        used = t.get("used_pct")
        width = 0.0 if used is None else min(100.0, float(used))
        meter = f'<span class="meter"><span style="width:{width:.0f}%"></span></span>'
        state = "exhausted" if t.get("exhausted") else "ok"
        rows.append(
            _row(
                [
                    _td(t.get("name")),
                    _td(_usd(t.get("spent_usd")), figure=f"spent-{t.get('name')}"),
                    _td(_usd(t.get("budget_usd"))),
                    f"<td>{meter} {e(None if used is None else f'{used}%')}</td>",
                    _td(state, figure=f"budget-{t.get('name')}", cls=state),
                ]
            )
        )
    head = "<tr><th>tenant</th><th>spent</th><th>budget</th><th>used</th><th>state</th></tr>"
    table = f'<table class="tenants"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'
    return _section("Spend vs budget (this month)", "tenants", table if rows else "<p>none</p>")


def _audit_line(audit: Mapping[str, Any]) -> str:
    ok = audit.get("ok")
    if ok is None:
        state, text = "pending", "chain not verified yet"
    elif ok:
        state = "ok"
        text = f"audit verify: ok — {audit.get('checked')} records in {audit.get('chains')} chains"
    else:
        state, text = (
            "fail",
            "audit verify: FAILED — " + "; ".join(str(p) for p in audit.get("problems") or ()),
        )
    return f'<p class="audit {state}" data-figure="audit-state">{e(text)}</p>'


def _decisions(view: Mapping[str, Any]) -> str:
    columns = ("time", "node", "tenant", "sensitivity", "outcome", "reason")
    head = "<tr>" + "".join(f"<th>{c}</th>" for c in (*columns, "decision")) + "</tr>"
    rows = [
        _row(
            [
                *(_td(d.get(c), cls="reason" if c == "reason" else None) for c in columns),
                f'<td class="id" title="{e(d.get("decision_id"))}" '
                f'data-decision-id="{e(d.get("decision_id"))}">'
                f"{e(str(d.get('decision_id'))[:8])}</td>",
            ],
            cls=f"outcome-{d.get('outcome')}",
        )
        for d in view.get("decisions") or ()
    ]
    table = (
        f'<table class="decisions"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'
        if rows
        else "<p>No request decision recorded yet.</p>"
    )
    return _section("Recent decisions", "decisions", _audit_line(view.get("audit") or {}) + table)


def main(view: Mapping[str, Any]) -> str:
    """The ``<main>`` content for ``view``."""
    return (
        f'<p class="stamp">updated <span data-figure="generated-at">'
        f"{e(view.get('generated_at'))}</span></p>"
        + _traffic(view)
        + _nodes(view)
        + _tenants(view)
        + _decisions(view)
        + _policy(view)
    )


def page(view: Mapping[str, Any], *, poll_ms: int = 2000) -> str:
    """The whole HTML page: stylesheet and script are same-origin files, nothing else."""
    domain = e(view.get("trust_domain"))
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>tiermesh — {domain}</title>"
        '<link rel="icon" href="/favicon.svg">'
        '<link rel="stylesheet" href="/dashboard.css"></head>'
        f'<body data-poll-ms="{int(poll_ms)}">'
        f'<header><h1>tiermesh</h1><span class="domain">{domain}</span>'
        '<span id="live" class="live">live</span></header>'
        f'<main id="main">{main(view)}</main>'
        '<script src="/dashboard.js"></script></body></html>\n'
    )
