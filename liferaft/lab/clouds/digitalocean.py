"""A lab DigitalOcean: the documented API v2 subset liferaft's `digitalocean` adapter (libcloud's driver) uses, with
real hosts behind it.

    python -m liferaft.lab.clouds.digitalocean --dir D --listen ADDR --port P --tokens FILE \\
        --bridge BR --bridge-address 10.213.X.1 --lab-id ID

Endpoints (https://docs.digitalocean.com/reference/api/api-reference/, JSON shapes as documented):
    /v2/account    /v2/account/keys, /v2/account/keys/{id|fingerprint}
    /v2/droplets (GET with tag_name / name / page / per_page, POST), /v2/droplets/{id} (GET, DELETE)
    /v2/firewalls (GET, POST), /v2/firewalls/{id} (GET, PUT, DELETE)    /v2/tags (GET, POST), /v2/tags/{name} (DELETE)
    /v2/actions/{id}    /v2/sizes (with price_hourly)    /v2/regions    /v2/images, /v2/images/{id|slug}
Lists carry `links.pages` and `meta.total`; every answer the `ratelimit-*` headers.
Errors: `{"id", "message", "request_id"}` -- 401 unauthorized (a token not in the tokens file), 404 not_found, 422
unprocessable_entity (bad input; the droplet limit: "creating this/these droplet(s) will exceed your droplet
limit", checked before anything is created). Rate limiting (429 too_many_requests) comes from the fault proxy in
front.

Each droplet created gets a real lab host (`_machines.CloudMachines`, at .200 ... .249 of the lab's /24, netns
`lr-<lab id>-d<n>`: apart from the Hetzner cloud's): its own network namespace and sshd, root's
authorized_keys from the droplet's SSH keys, and the host key from the cloud-init user data's `ssh_keys`
(ed25519_private/ed25519_public) -- else a generated one. Cloud firewalls (by droplet id or tag) are enforced with
nftables in the host's namespace with DigitalOcean's semantics: inbound and outbound dropped unless a rule allows.
Creation is asynchronous: POST answers 202 with status `new`; the host is built by the main thread, then the
droplet is `active` with its public IPv4. DELETE answers 204; the droplet reads `off` until its host is gone.

Lab-only control (header X-Lab-Token: the token in `<dir>/control_token`): GET /lab/state, POST /lab/settings
{"droplet_limit": N, "apply_user_data_host_keys": bool, "hold_boot": bool (new droplets stay `new`),
"account_status": "active" | "warning" | "locked", "status_message": str (what /v2/account says),
"lose_create_answers": N (the next N droplets are made but their creation is answered 500)}.
"""

from __future__ import annotations

import sys

from liferaft.lab.clouds._digitalocean_api import DigitalOceanState
from liferaft.lab.clouds._digitalocean_http import make_handler
from liferaft.lab.clouds._serve import run_cloud


def main(argv: list[str] | None = None) -> int:
    return run_cloud("python -m liferaft.lab.clouds.digitalocean", "lab digitalocean cloud", argv,
                     DigitalOceanState, make_handler, letters=("d", "e", "d"), first_host=200, max_hosts=50)


if __name__ == "__main__":
    sys.exit(main())
