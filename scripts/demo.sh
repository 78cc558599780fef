#!/usr/bin/env bash
# `make demo`: bring the local lab up and run the main job against it, printing where things are.
# Each step runs only if that command exists in this build of liferaft, and the demo says what is still to come.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
has() { liferaft "$1" --help >/dev/null 2>&1; }

say "liferaft lab up (moto as 'aws', s3rver, PowerDNS, hosts a/b/c in network namespaces, the example app on a, deployed by the deploy engine)"
liferaft lab up
STACK=$(liferaft lab status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["stack_file"])')
export LIFERAFT_STACK="$STACK"
ALT=$(liferaft lab status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["alternate_sites"][0])')
liferaft lab status

say "liferaft validate"
liferaft validate

if has deploy; then
  # What `lab up` ran to stand the example up (`liferaft deploy`), shown here as a plan: it changes nothing.
  say "liferaft deploy --dry-run"; liferaft deploy --dry-run
fi
if has providers; then say "liferaft providers check"; liferaft providers check || true; fi
if has health; then say "liferaft health"; liferaft health || true; fi
if has plan; then say "liferaft plan --to $ALT"; liferaft plan --to "$ALT"; fi
if has drill; then
  # Reports go to the state dir (as `liferaft drill` does by default), never into this checkout.
  STATE_DIR="${LIFERAFT_STATE_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/liferaft}"
  REPORT_DIR="${LIFERAFT_REPORT_DIR:-$STATE_DIR/reports}"
  say "liferaft drill --to $ALT --report $REPORT_DIR"
  liferaft drill --to "$ALT" --report "$REPORT_DIR"
  say "drill reports (Markdown, HTML, JSON) are in $REPORT_DIR"
elif has failover; then
  say "liferaft failover --to $ALT --yes  (drills are still to come: this is a real failover in the lab)"
  liferaft failover --to "$ALT" --yes
else
  say "failover and drills are still to come; the lab stays up: 'liferaft lab down' stops it"
fi
