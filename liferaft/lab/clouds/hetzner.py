"""A lab Hetzner Cloud: the documented REST API subset liferaft's `hcloud` adapter uses, with real hosts behind it.

    python -m liferaft.lab.clouds.hetzner --dir D --listen ADDR --port P --tokens FILE \\
        --bridge BR --bridge-address 10.213.X.1 --lab-id ID

Endpoints (https://docs.hetzner.cloud, JSON shapes and error bodies as documented):
    /v1/servers (GET list with name / label_selector / status / page / per_page, POST), /v1/servers/{id} (GET, DELETE)
    /v1/ssh_keys, /v1/ssh_keys/{id}        /v1/firewalls, /v1/firewalls/{id}, /v1/firewalls/{id}/actions/set_rules
    /v1/actions/{id}    /v1/locations    /v1/server_types    /v1/images    /v1/pricing
Errors: `{"error": {"code", "message", "details"}}` -- 401 unauthorized (a token not in the tokens file), 403
resource_limit_exceeded (the server limit, checked before anything is created), 404 not_found, 409
uniqueness_error, 400 invalid_input. Rate limiting (429 rate_limit_exceeded) comes from the fault proxy in front.

Each server created gets a real lab host (`_machines.CloudMachines`): its own network namespace and sshd, root's
authorized_keys from the server's SSH keys, and the host key from the cloud-init user data's `ssh_keys`
(ed25519_private/ed25519_public) -- else a generated one, as an image without that key in its user data would.
Creation is asynchronous as at Hetzner: POST answers at once with status `initializing` and a running action; the
host is built by the main thread (hosts die with the thread that made them), then the server is `running`.

Lab-only control (header X-Lab-Token: the token in `<dir>/control_token`): GET /lab/state, POST /lab/settings
{"server_limit": N, "apply_user_data_host_keys": bool,
"hold_boot": bool (new servers stay `initializing`, as one that never boots, until released)}.
"""

from __future__ import annotations

import sys

from liferaft.lab.clouds._hetzner_api import HetznerState
from liferaft.lab.clouds._hetzner_http import make_handler
from liferaft.lab.clouds._serve import run_cloud


def main(argv: list[str] | None = None) -> int:
    return run_cloud("python -m liferaft.lab.clouds.hetzner", "lab hetzner cloud", argv, HetznerState, make_handler)


if __name__ == "__main__":
    sys.exit(main())
