"""Tenant JWTs: the latency a JWT credential costs over a tenant API key, through Envoy.

One real Envoy with the compiled config of the small catalog plus one JWT issuer (RS256,
2048-bit key, key set fetched from a loopback JWKS server and cached), the authz server
with the shipped request policy and a durable decision log (``AuthzThread``), and the
tier backends. Requests go one at a time over fresh connections (``urllib``), rotating
between three credentials so all see the same machine noise:

- ``api_key``: ``authorization: Bearer tmk_…`` (digest check in the authz server);
- ``jwt, same token``: one token again and again (Envoy's per-provider JWT cache hits);
- ``jwt, new token``: a different token every request (signed beforehand, outside the
  timing), so Envoy verifies an RS256 signature each time.

Every answer must be 200. The headline is the median round (``--rounds``); each round is
``--count`` requests per credential. Writes ``bench/results/tenant_jwt.md``.

    .venv/bin/python bench/tenant_jwt.py [--count 500] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.integration.authz.conftest import AuthzMesh, run_authz_mesh  # noqa: E402
from tests.integration.authz.test_tenant_jwt_envoy import (  # noqa: E402
    AUDIENCE,
    CLEAN,
    GLOBEX,
    GLOBEX_KEY,
    ISSUER,
    PUBLIC_REASONING,
    with_issuer,
)
from tests.support.jwks import JwksServer, SigningKey  # noqa: E402

from tiermesh.agents.authz import JwtTrust, KeyTable  # noqa: E402
from tiermesh.controlplane.api import ApiKeyEntry  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "tenant_jwt.md"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _round(mesh: AuthzMesh, key: SigningKey, count: int) -> dict[str, list[float]]:
    fresh = iter(
        [
            key.token({"iss": ISSUER, "aud": AUDIENCE, "sub": f"svc-{i}", "org": "globex"})
            for i in range(count)
        ]
    )
    same = key.token(
        {"iss": ISSUER, "aud": AUDIENCE, "sub": "svc", "org": "globex"}, lifetime_s=3600
    )
    credentials: dict[str, Callable[[], str]] = {
        "api_key": lambda: GLOBEX_KEY,
        "jwt, same token": lambda: same,
        "jwt, new token": lambda: next(fresh),
    }
    times: dict[str, list[float]] = {name: [] for name in credentials}
    for _ in range(count):
        for name, credential in credentials.items():
            headers = {**PUBLIC_REASONING, "authorization": f"Bearer {credential()}"}
            started = time.perf_counter()
            reply = mesh.send(headers, CLEAN)
            times[name].append((time.perf_counter() - started) * 1000)
            if reply.status != 200:
                raise SystemExit(f"{name}: status {reply.status}: {reply.body}")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    key = SigningKey()
    jwks = JwksServer(key)
    rounds: list[dict[str, list[float]]] = []
    try:
        with (
            tempfile.TemporaryDirectory() as tmp,
            run_authz_mesh(Path(tmp), with_issuer(jwks.uri, cache_s=300)) as mesh,
        ):
            entry = ApiKeyEntry(id=GLOBEX.key_id, tenant="globex", sha256=GLOBEX.digest)
            trust = JwtTrust.of(mesh.catalog)
            mesh.authz.use_keys(KeyTable((entry,), required=True, jwt=trust))
            _round(mesh, key, 50)  # warm: connections, caches, the JWKS fetch
            rounds = [_round(mesh, key, args.count) for _ in range(args.rounds)]
    finally:
        jwks.stop()
    lines = [
        "# Tenant JWTs: latency of a JWT credential vs a tenant API key, through Envoy",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; {args.rounds} rounds x {args.count} requests per "
        "credential, one at a time, rotating credentials; whole round trip (client, Envoy, "
        "jwt_authn, ext_authz with durable decision log, backend). Written by "
        "`bench/tenant_jwt.py`.",
        "",
        "| credential | p50 ms (median round) | p99 ms (median round) | p50 per round |",
        "|---|---|---|---|",
    ]
    for name in rounds[0]:
        p50s = [_percentile(r[name], 0.5) for r in rounds]
        p99s = [_percentile(r[name], 0.99) for r in rounds]
        per_round = ", ".join(f"{p:.2f}" for p in p50s)
        lines.append(
            f"| {name} | {statistics.median(p50s):.2f} | {statistics.median(p99s):.2f} | "
            f"{per_round} |"
        )
    lines += [
        "",
        "Caveats: a shared 2-core VM; p99 of a few hundred samples moves by milliseconds "
        "between runs. The first request after a key set's cache runs out waits for the "
        "fetch (not measured here).",
        "",
    ]
    RESULTS.write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
