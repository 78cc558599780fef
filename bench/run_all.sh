#!/usr/bin/env bash
# One command for the whole movers benchmark: objects (liferaft vs rclone) and PostgreSQL (liferaft vs
# pg_dump/pg_restore), each on lab servers it starts itself. Prints ONE table and rewrites bench/RESULTS.md.
# Takes ~5-10 minutes and loads both cores: run it when the machine is quiet.
#   bench/run_all.sh [--quick]     (--quick: 500 small objects, 4 large, 256 MiB memory test, pgbench -s 10)
set -euo pipefail
cd "$(dirname "$0")/.."
OBJ_ARGS=(); PG_ARGS=()
if [[ "${1:-}" == "--quick" ]]; then
  OBJ_ARGS=(--small 500 --large 4 --memory-gib 0.25); PG_ARGS=(--scale 10 --load-seconds 4)
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
python -m bench.bench_objects --json "${OBJ_ARGS[@]}" > "$out/objects.json"
python -m bench.bench_postgres --json "${PG_ARGS[@]}" > "$out/postgres.json"
python - "$out/objects.json" "$out/postgres.json" "$*" <<'PY'
import json, os, platform, sys, time
from bench.bench_objects import table
objs, pgs = (json.load(open(p)) for p in sys.argv[1:3])
rows = objs["rows"] + pgs["rows"]
load = os.getloadavg()
md = f"""# Movers benchmark results

Command: `bench/run_all.sh {sys.argv[3]}`  
Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  
Machine: {platform.platform()}, {os.cpu_count()} cores, load average at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}
(the machine is shared with other agents: compare the ratios, which come from one run).

Peers: rclone {os.popen('rclone version').read().split()[1]} tuned (`--transfers 8 --checkers 16 --fast-list --s3-no-head
--s3-no-check-bucket`), configured by environment; pg_dump/pg_restore 15 (`-Fd -j2`, `pg_restore -j2`).
Object servers: moto (source) -> s3rver (target), both through liferaft's aws adapter (its lean SigV4 path for
GET/HEAD/PUT/listings, boto3 for multipart). PostgreSQL: two local 15 clusters.

{table(rows)}
"""
# Keep what was written between markers: the notes on these rows (by hand), bench/bench_drill.py's section, the
# no-notice day's table (by hand) and bench/bench_soak.py's section.
try:
    old = open("bench/RESULTS.md").read()
except OSError:
    old = ""
from bench.bench_drill import BEGIN, END
from bench.bench_soak import BEGIN as SOAK_BEGIN, END as SOAK_END
for begin, end in (("<!-- notes on the movers rows (kept by run_all.sh) -->", "<!-- end of notes -->"), (BEGIN, END),
                   ("<!-- no-notice day (by hand) -->", "<!-- end of no-notice day -->"), (SOAK_BEGIN, SOAK_END)):
    if begin in old and end in old:
        md = md.rstrip() + "\n\n" + begin + old.split(begin, 1)[1].split(end, 1)[0] + end + "\n"
open("bench/RESULTS.md", "w").write(md)
print(table(rows))
PY
