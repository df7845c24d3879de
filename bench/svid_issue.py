"""How fast the SPIFFE CA issues SVIDs, and what rotating a fleet costs.

Measures, per CA key type (P-256, P-384):

- issue from CSR (parse + key/extension checks + CSR signature verify + sign), per second;
- sign only (``issue_for_key``: no CSR), per second;
- verify an SVID chain against the bundle (what the xDS server does per connection);
- rotating N nodes: N CSRs (made beforehand, node-side) → N SVIDs, wall and CPU seconds.

Each rate loop stops at ``--count`` iterations or ``--seconds``, whichever comes first.
Writes a markdown table to ``bench/results/identity.md``.

    .venv/bin/python bench/svid_issue.py [--count 20000] [--seconds 3] [--nodes 1000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import cryptography
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tiermesh.controlplane.identity import (
    CaConfig,
    IssuedSvid,
    KeyAlgorithm,
    LocalCertificateAuthority,
    TrustBundle,
    verify_svid,
)

RESULTS = Path(__file__).parent / "results" / "identity.md"
TRUST_DOMAIN = "mesh.example"


def make_csrs(count: int) -> list[tuple[str, bytes]]:
    """``count`` (node id, PEM CSR) pairs, each with its own P-256 key."""
    out: list[tuple[str, bytes]] = []
    for i in range(count):
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"node-{i}")]))
            .sign(key, hashes.SHA256())
        )
        out.append((f"node-{i}", csr.public_bytes(serialization.Encoding.PEM)))
    return out


def rate(op: Callable[[int], object], count: int, seconds: float) -> tuple[int, float, float]:
    """Run ``op(i)`` until ``count`` calls or ``seconds`` elapse: (calls, wall s, CPU s)."""
    wall0, cpu0 = time.perf_counter(), time.process_time()
    deadline = wall0 + seconds
    done = 0
    while done < count and time.perf_counter() < deadline:
        op(done)
        done += 1
    return done, time.perf_counter() - wall0, time.process_time() - cpu0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20000, help="max iterations per rate loop")
    parser.add_argument("--seconds", type=float, default=3.0, help="max seconds per rate loop")
    parser.add_argument("--nodes", type=int, default=1000, help="fleet size for the rotation")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    pool = make_csrs(max(args.nodes, 500))
    rows: list[tuple[str, str, str, str]] = []
    for algorithm in (KeyAlgorithm.P256, KeyAlgorithm.P384):
        ca = LocalCertificateAuthority.create(CaConfig(TRUST_DOMAIN, key_algorithm=algorithm))
        public_keys = [
            x509.load_pem_x509_csr(csr).public_key() for _, csr in pool[: min(len(pool), 500)]
        ]

        def from_csr(i: int, ca: LocalCertificateAuthority = ca) -> IssuedSvid:
            node_id, csr = pool[i % len(pool)]
            return ca.issue(csr, node_id)

        def sign_only(
            i: int, ca: LocalCertificateAuthority = ca, keys: Sequence[object] = public_keys
        ) -> object:
            return ca.issue_for_key(keys[i % len(keys)], f"node-{i % len(keys)}")

        chains = [from_csr(i).chain for i in range(200)]
        bundle, now = ca.bundle(), dt.datetime.now(dt.UTC)

        def verify(
            i: int,
            chains: list[tuple[x509.Certificate, ...]] = chains,
            bundle: TrustBundle = bundle,
            now: dt.datetime = now,
        ) -> object:
            return verify_svid(chains[i % len(chains)], bundle, now=now)

        for label, op in (
            ("issue from CSR (verify + sign)", from_csr),
            ("sign only (no CSR)", sign_only),
            ("verify SVID chain against bundle", verify),
        ):
            n, wall, cpu = rate(op, args.count, args.seconds)
            rows.append(
                (
                    f"{algorithm.value} CA",
                    label,
                    f"{n / wall:,.0f} /s",
                    f"{n} in {wall:.2f} s wall, {cpu:.2f} s CPU",
                )
            )

        fleet = pool[: args.nodes]
        wall0, cpu0 = time.perf_counter(), time.process_time()
        for node_id, csr in fleet:
            ca.issue(csr, node_id)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        rows.append(
            (
                f"{algorithm.value} CA",
                f"rotate {len(fleet):,} nodes (CSR → SVID)",
                f"{wall:.3f} s wall",
                f"{cpu:.3f} s CPU, {wall / len(fleet) * 1e3:.3f} ms/node",
            )
        )

    ca = LocalCertificateAuthority.create(CaConfig(TRUST_DOMAIN))
    wall0 = time.perf_counter()
    blob = ca.export_encrypted("bench passphrase")
    export_s = time.perf_counter() - wall0
    wall0 = time.perf_counter()
    LocalCertificateAuthority.load_encrypted(CaConfig(TRUST_DOMAIN), blob, "bench passphrase")
    load_s = time.perf_counter() - wall0
    rows.append(
        (
            "ec-p256 CA",
            "encrypted export / load (scrypt N=2^15)",
            f"{export_s * 1e3:.0f} / {load_s * 1e3:.0f} ms",
            f"{len(blob)} bytes",
        )
    )

    lines = [
        "# SPIFFE CA: SVID issuance",
        "",
        f"`bench/svid_issue.py --count {args.count} --seconds {args.seconds} "
        f"--nodes {args.nodes}`; node keys and CSRs are EC P-256, made before timing.",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}, "
        f"cryptography {cryptography.__version__}. Single thread.",
        "",
        "| CA | operation | result | detail |",
        "|---|---|---|---|",
        *(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows),
        "",
        "Wall time above CPU time means other processes had the cores during the run.",
        "Rotation is CA-side only (nodes make their keys and CSRs). 'issue from CSR'",
        "includes the CSR self-signature check, which costs about as much as signing.",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
