"""Start the lab clouds (Hetzner, DigitalOcean) as lab server processes (`liferaft.lab.servers.LabServer`)."""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from pathlib import Path
from typing import Any

from liferaft.lab._proc import OPENER, http_status
from liferaft.lab.servers import LabServer


class HetznerCloudServer(LabServer):
    """The lab Hetzner cloud (`liferaft.lab.clouds.hetzner`): its hosts go on the lab bridge `bridge`."""

    kind = "hcloud"
    module = "liferaft.lab.clouds.hetzner"
    ready_path = "/v1/locations"

    def __init__(self, workdir: str | Path, address: str, *, bridge: str, bridge_address: str, lab_id: str,
                 token: str, name: str | None = None, die_with_parent: bool = True) -> None:
        super().__init__(workdir, address, 0, name=name, die_with_parent=die_with_parent)
        self.bridge, self.bridge_address, self.lab_id = bridge, bridge_address, lab_id
        self._token = token

    def __repr__(self) -> str:  # never the token
        return f"<{type(self).__name__} {self.name} {self.url} pid={self.pid}>"

    @property
    def tokens_file(self) -> Path:
        return self.data_dir / "tokens"

    def _prepare(self) -> None:
        fd = os.open(self.tokens_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self._token + "\n")

    def _argv(self) -> list[str]:
        return [sys.executable, "-m", self.module, "--dir", str(self.data_dir),
                "--listen", self.address, "--port", str(self.port), "--tokens", str(self.tokens_file),
                "--bridge", self.bridge, "--bridge-address", self.bridge_address, "--lab-id", self.lab_id]

    def _ready(self) -> bool:
        return http_status(self.url + self.ready_path, headers={"Authorization": f"Bearer {self._token}"},
                           timeout=1.0) == 200

    def lab(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """The lab-only control API: GET /lab/state, POST /lab/settings."""
        return lab_control(self.url, self.data_dir / "control_token", path, body)

    def reset(self) -> None:
        raise NotImplementedError("delete the servers through the API")

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "control_token_file": str(self.data_dir / "control_token")}


class DigitalOceanCloudServer(HetznerCloudServer):
    """The lab DigitalOcean cloud (`liferaft.lab.clouds.digitalocean`): its hosts go on the lab bridge `bridge`."""

    kind = "digitalocean"
    module = "liferaft.lab.clouds.digitalocean"
    ready_path = "/v2/regions"


def lab_control(url: str, token_file: Path, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """Call the lab cloud's control API from any process (token read from its 0600 file)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url + path, data=data, method="POST" if body is not None else "GET",
                                 headers={"X-Lab-Token": token_file.read_text().strip(),
                                          "Content-Type": "application/json"})
    with OPENER.open(req, timeout=10) as resp:
        result: dict[str, Any] = json.loads(resp.read())
    return result
