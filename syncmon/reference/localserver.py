"""A local livekit-server on loopback only, for the embedded demo and the tests.

The configuration keeps every listener and ICE candidate on 127.0.0.1 (bind address, node IP,
interface and IP filters, one UDP port, no TCP fallback, TURN off).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..errors import SyncmonError

LIVEKIT_SERVER_VERSION = "v1.13.5"
DEV_KEY = "devkey"
# a development secret for the loopback server only (>= 32 characters, as the server demands)
DEV_SECRET = "secret-secret-secret-secret-secret-0123"

_CONFIG = """\
port: {port}
bind_addresses: [127.0.0.1]
keys:
  {key}: {secret}
rtc:
  udp_port: {udp_port}
  tcp_port: 0
  node_ip: 127.0.0.1
  use_external_ip: false
  enable_loopback_candidate: true
  interfaces:
    includes: [lo]
  ips:
    includes: [127.0.0.1/32]
  stun_servers: ["127.0.0.1:3478"]
turn:
  enabled: false
logging:
  level: {log_level}
"""


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_binary(*, build: bool = True) -> str:
    """The livekit-server binary: on PATH, in ~/go/bin, or built with ``go install``."""
    for name in ("livekit-server",):
        if p := shutil.which(name):
            return p
    gobin = Path(os.environ.get("GOBIN") or Path.home() / "go" / "bin")
    if (gobin / "server").is_file():
        return str(gobin / "server")
    if not build:
        raise SyncmonError("livekit-server not found (run scripts/setup.sh)")
    if not shutil.which("go"):
        raise SyncmonError("livekit-server not found and no Go toolchain to build it")
    print(f"building livekit-server {LIVEKIT_SERVER_VERSION} with go install (about 2 min)...")
    subprocess.run(
        ["go", "install", f"github.com/livekit/livekit-server/cmd/server@{LIVEKIT_SERVER_VERSION}"],
        check=True,
        env={**os.environ, "GOBIN": str(gobin)},
    )
    return str(gobin / "server")


@dataclass
class LocalServer:
    """A running loopback livekit-server; ``stop()`` or use as a context manager."""

    port: int
    udp_port: int
    proc: subprocess.Popen[bytes] | None = None
    workdir: str = ""
    api_key: str = DEV_KEY
    api_secret: str = DEV_SECRET
    # room.sync_streams: a participant's audio and video share one WebRTC stream id, so that
    # viewers lip-sync them (off by default, as in livekit-server's own default)
    sync_streams: bool = False
    # what its server.log (in workdir) keeps: "info" adds each agent job's dispatch
    log_level: str = "warn"

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @classmethod
    def start(
        cls,
        *,
        port: int | None = None,
        udp_port: int | None = None,
        build: bool = True,
        sync_streams: bool = False,
        log_level: str = "warn",
    ) -> LocalServer:
        srv = cls(
            port=port or free_port(),
            udp_port=udp_port or free_port(socket.SOCK_DGRAM),
            sync_streams=sync_streams,
            log_level=log_level,
        )
        srv.workdir = tempfile.mkdtemp(prefix="syncmon-livekit-")
        srv._spawn(find_binary(build=build))
        return srv

    def _spawn(self, binary: str) -> None:
        cfg = Path(self.workdir) / "livekit.yaml"
        text = _CONFIG.format(
            port=self.port,
            udp_port=self.udp_port,
            key=self.api_key,
            secret=self.api_secret,
            log_level=self.log_level,
        )
        if self.sync_streams:
            text += "room:\n  sync_streams: true\n"
        cfg.write_text(text)
        log = open(Path(self.workdir) / "server.log", "ab")  # noqa: SIM115 - owned by proc
        self.proc = subprocess.Popen(
            [binary, "--config", str(cfg)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        self._binary = binary
        self.wait_ready()

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise SyncmonError(f"livekit-server exited: see {self.workdir}/server.log")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise SyncmonError(f"livekit-server did not come up on port {self.port}")

    def kill(self) -> None:
        """Stop the server abruptly (SIGKILL), as a crash would."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def restart(self) -> None:
        self.kill()
        self._spawn(self._binary)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
