"""The LiteLLM side of ``gateway_overhead.py``: its own venv, config and proxy process.

LiteLLM is not a tiermesh dependency: it lives in a separate venv (default
``bench/.venv-litellm``, override with ``TIERMESH_BENCH_LITELLM_VENV``) installed only
from the hash-pinned ``requirements/bench-litellm.txt`` (``--install-litellm``).

The proxy runs with no database, no telemetry and the bundled model cost map, so it
never reaches the network, as one uvicorn worker (``--num_workers 1``), with two
deployments of the same model (``bench-primary`` → upstream A, ``bench-secondary`` →
upstream B) and ``fallbacks: bench-primary → bench-secondary`` in ``router_settings``:
the equivalent of tiermesh's two-step chain.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from _gw_owned import Owned, log_tail

REPO = Path(__file__).resolve().parents[1]
REQUIREMENTS = REPO / "requirements" / "bench-litellm.txt"
VENV = Path(os.environ.get("TIERMESH_BENCH_LITELLM_VENV", REPO / "bench" / ".venv-litellm"))
STOP_GRACE_S = 10.0

OFFLINE_ENV = {
    "LITELLM_TELEMETRY": "False",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_LOG": "ERROR",
    "LITELLM_DONT_SHOW_FEEDBACK_BOX": "True",
    "DISABLE_ADMIN_UI": "True",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "NO_DOCKER": "True",
    # Like-for-like with the tiermesh path, which authenticates nothing in this bench
    # (no ext_authz); the proxy listens on 127.0.0.1 only.
    "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true",
}
"""Environment that keeps the proxy off the network (cost map, telemetry, UI, hub) and
lets it start without a master key."""

DROPPED_ENV = ("DATABASE_URL", "REDIS_HOST", "REDIS_URL", "LITELLM_MASTER_KEY", "OPENAI_API_KEY")


def litellm_binary() -> Path:
    return VENV / "bin" / "litellm"


def installed() -> bool:
    return litellm_binary().is_file() and (VENV / "bin" / "python").is_file()


def install() -> None:
    """Create the venv and install the hash-pinned requirements into it with ``uv``
    (``--require-hashes``; the ``uv`` of tiermesh's own venv, pinned in
    ``requirements/bootstrap.txt``). pip 23 refuses this file: it resolves an extra
    (``pydantic[email]``) as a requirement of its own, unpinned."""
    uv = Path(sys.executable).with_name("uv")
    if not uv.is_file():
        raise RuntimeError(f"no uv beside {sys.executable}: run `make deps` first")
    if not (VENV / "bin" / "python").is_file():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
    subprocess.run(
        [
            str(uv),
            "pip",
            "install",
            "--quiet",
            "--require-hashes",
            "--python",
            str(VENV / "bin" / "python"),
            "-r",
            str(REQUIREMENTS),
        ],
        check=True,
        timeout=1800,
        env={**os.environ, "UV_PYTHON_DOWNLOADS": "never"},
    )


def version() -> str:
    done = subprocess.run(
        [
            str(VENV / "bin" / "python"),
            "-c",
            "import importlib.metadata as m; print(m.version('litellm'))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.stdout.strip() or "unknown"


def config(primary_port: int, secondary_port: int, retries: int) -> dict[str, Any]:
    """Proxy config: two deployments of the same model, a fallback from the first to the
    second, ``retries`` retries per deployment, no DB, no callbacks."""

    def deployment(name: str, port: int) -> dict[str, Any]:
        return {
            "model_name": name,
            "litellm_params": {
                "model": "openai/bench-model",
                "api_base": f"http://127.0.0.1:{port}/v1",
                "api_key": "sk-bench-dummy",
                "timeout": 30,
            },
        }

    return {
        "model_list": [
            deployment("bench-primary", primary_port),
            deployment("bench-secondary", secondary_port),
        ],
        "router_settings": {
            "num_retries": retries,
            "timeout": 30,
            "fallbacks": [{"bench-primary": ["bench-secondary"]}],
            "allowed_fails": 5,
            "cooldown_time": 30,
        },
        "litellm_settings": {
            "telemetry": False,
            "drop_params": True,
            "set_verbose": False,
            "request_timeout": 30,
        },
        "general_settings": {},
    }


class LiteLLMProxy(Owned):
    """``litellm --config cfg --host 127.0.0.1 --port P --num_workers 1`` as a child in its
    own session; stopped by PID (SIGTERM, then SIGKILL on the process group it leads).
    Owns a temp dir for its config and log. Not thread-safe."""

    def __init__(self, port: int, primary_port: int, secondary_port: int, retries: int) -> None:
        self.port = port
        self._dir = Path(tempfile.mkdtemp(prefix="tiermesh-gw-litellm-"))
        self.config_path = self._dir / "config.yaml"
        # JSON is YAML: no YAML library needed on this side.
        self.config_path.write_text(
            json.dumps(config(primary_port, secondary_port, retries), indent=2)
        )
        self.log_path = self._dir / "litellm.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120.0) -> float:
        """Start the proxy and wait until a chat completion through it succeeds; returns
        the seconds that took."""
        env = {k: v for k, v in os.environ.items() if k not in DROPPED_ENV}
        env.update(OFFLINE_ENV)
        env["HOME"] = str(self._dir)
        command = [
            str(litellm_binary()),
            "--config",
            str(self.config_path),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--num_workers",
            "1",
        ]
        started = time.monotonic()
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self._dir,
                start_new_session=True,
            )
        deadline = started + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"litellm exited with {self.process.returncode}:\n{self.tail()}")
            request = urllib.request.Request(
                f"http://127.0.0.1:{self.port}/v1/chat/completions",
                data=b'{"model":"bench-primary","messages":[{"role":"user","content":"hi"}]}',
                headers={"content-type": "application/json"},
            )
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    if response.status == 200:
                        return time.monotonic() - started
            except OSError as exc:
                last = str(exc)
            time.sleep(0.25)
        raise RuntimeError(f"litellm not serving after {timeout}s ({last}):\n{self.tail()}")

    def tail(self, chars: int = 3000) -> str:
        return log_tail(self.log_path, chars)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            # --num_workers may fork; the proxy leads its own process group.
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(STOP_GRACE_S)

    def close(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self._dir, ignore_errors=True)
