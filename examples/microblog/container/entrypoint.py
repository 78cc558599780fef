#!/usr/bin/python3
"""The microblog's container entrypoint: the app's config file written from the environment liferaft gives a
container service (its database and bucket at the target: `LIFERAFT_DB_<KEY>_*`, `LIFERAFT_BUCKET_<KEY>_*`; its
settings and app secrets as they are), then the app run on it. The file is 0600 in a directory only root reads
(the app refuses a config others can read), and no value is printed or put on a command line.

    LIFERAFT_DB_<KEY>_HOST|PORT|NAME|USER|PASSWORD        the database (the first key, or MICROBLOG_DB=<key>)
    LIFERAFT_BUCKET_<KEY>_NAME|ENDPOINT_URL|REGION|ACCESS_KEY_ID|SECRET_ACCESS_KEY    the bucket (or MICROBLOG_BUCKET)
    MICROBLOG_LISTEN_PORT                                 default 8080
"""

from __future__ import annotations

import json
import os
import re
import sys

sys.path.insert(0, "/app")

import microblog  # noqa: E402  (the app, beside this file in the image)

CONFIG = "/run/microblog/config.json"


def _key(prefix: str, chosen: str | None) -> str:
    keys = sorted({m.group(1) for name in os.environ if (m := re.fullmatch(prefix + r"([A-Z0-9_]+?)_HOST", name)
                                                         or re.fullmatch(prefix + r"([A-Z0-9_]+?)_NAME", name))})
    if chosen:
        return chosen.upper().replace("-", "_")
    if not keys:
        raise SystemExit(f"microblog: no {prefix}<KEY>_* variables: the service names no "
                         f"{'database' if 'DB' in prefix else 'bucket'}")
    return keys[0]


def config() -> dict[str, object]:
    env = os.environ
    db = "LIFERAFT_DB_" + _key("LIFERAFT_DB_", env.get("MICROBLOG_DB")) + "_"
    b = "LIFERAFT_BUCKET_" + _key("LIFERAFT_BUCKET_", env.get("MICROBLOG_BUCKET")) + "_"
    return {
        "listen_host": "0.0.0.0", "listen_port": int(env.get("MICROBLOG_LISTEN_PORT", "8080")),
        "create_schema": True,
        "db": {"host": env[db + "HOST"], "port": int(env[db + "PORT"]), "name": env[db + "NAME"],
               "user": env[db + "USER"], "password": env[db + "PASSWORD"]},
        "s3": {"endpoint_url": env.get(b + "ENDPOINT_URL") or None, "region": env.get(b + "REGION") or "us-east-1",
               "access_key_id": env[b + "ACCESS_KEY_ID"], "secret_access_key": env[b + "SECRET_ACCESS_KEY"],
               "bucket": env[b + "NAME"]},
    }


def main() -> int:
    os.makedirs(os.path.dirname(CONFIG), mode=0o700, exist_ok=True)
    fd = os.open(CONFIG + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(config(), f)
    os.replace(CONFIG + ".tmp", CONFIG)
    return microblog.main(["--config", CONFIG])


if __name__ == "__main__":
    sys.exit(main())
