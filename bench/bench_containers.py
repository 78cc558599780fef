"""Mirroring container images: liferaft's mirror (what `replicate` does per image: a digest check at the target,
`skopeo copy --preserve-digests` when it lacks it) vs `skopeo sync` alone, between two local distribution registries.

Run: python -m bench.bench_containers [--images N] [--rounds R]
     python -m bench.bench_containers --drill [--rounds R]     (as root: the lab)

No root needed: it starts two `docker-registry` processes on loopback, builds N distinct images offline (the lab's
busybox image, each with its own /www/version) and pushes them to the first. Then, alternating who goes first
(each time into an empty target): a full mirror, and a no-change mirror (everything already there). Prints one table
of medians and ratios (liferaft / skopeo sync; below 1 is faster). The machine is shared: compare the ratios.

`--drill`: the example app's deploy in a drill, container variant vs playbook variant. Each round, for each variant
(alternating who goes first), a fresh lab without the example (`liferaft lab up --no-example`), `liferaft deploy` of
the variant at the primary (host a), then `liferaft drill --to alt-b` (notice, pilot-light: the service deployed at
b from nothing): the drill run's `deploy-web` step (playbook: Ansible copies the app and writes its config; container:
the image pulled from the alternate's registry -- mirrored there first by the function each `replicate` round
runs -- and the container run) and the drill's RTO. One table of medians and ratios (container / playbook).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from liferaft.lab.registries import IMAGE_REPOSITORY, RegistryServer, build_image, push
from liferaft.providers.registry_oci import Image, Registry, copy


def mirror(src: Registry, dst: Registry, images: list[Image]) -> int:
    """What `replicate` does for each image: copy it by digest unless the target holds that digest. Returns copies."""
    copied = 0
    for image in images:
        want = src.require(image)
        if dst.digest(image, want) != want:
            copy(src, dst, image, want)
            copied += 1
    return copied


def skopeo_sync(src: Registry, dst: Registry) -> None:
    """`skopeo sync` of the repository (every tag), registry to registry, digests kept."""
    subprocess.run(["skopeo", "sync", "--src", "docker", "--src-tls-verify=false", "--dest", "docker",
                    "--dest-tls-verify=false", "--preserve-digests", f"{src.host}/{IMAGE_REPOSITORY}",
                    f"{dst.host}/{IMAGE_REPOSITORY.rsplit('/', 1)[0]}"],
                   check=True, capture_output=True, text=True, timeout=600)


def timed(fn: object) -> float:
    t0 = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - t0


def _variant_stack(lab: object, variant: str) -> Path:
    """The lab's stack file for `variant`: the playbook one as `lab up` writes it; the container one with web only
    (no sidecar) and alt-b pilot-light, so both drills deploy the same service at b from nothing."""
    import yaml

    from liferaft.lab.container_example import container_example_stack

    info = lab.info  # type: ignore[attr-defined]
    if variant == "playbook":
        return Path(info.stack_file)
    doc = yaml.safe_load(container_example_stack(info.stack_file.read_text(), lab.read_state()))  # type: ignore
    doc["services"].pop("status", None)
    doc["sites"]["alt-b"].pop("standby", None)
    path = Path(info.stack_file).with_name("liferaft-bench-containers.yaml")
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _cli(stack: Path, state: Path, *args: str) -> str:
    import os
    import sys

    out = subprocess.run([sys.executable, "-m", "liferaft", "--stack", str(stack), "--state-dir", str(state), *args],
                         capture_output=True, text=True, timeout=1200, check=False, env=dict(os.environ),
                         stdin=subprocess.DEVNULL)
    if out.returncode not in (0, 1):
        raise SystemExit(f"liferaft {' '.join(args)} failed ({out.returncode}): {out.stderr[-2000:]}")
    return out.stdout


def drill_round(variant: str, work: Path) -> dict[str, float]:
    import json

    from liferaft.lab.core import Lab

    lab = Lab(work / f"lab-{variant}")
    try:
        lab.up(timeout=180, example=False, die_with_caller=True)
        stack, state = _variant_stack(lab, variant), work / f"state-{variant}"
        shutil.rmtree(state, ignore_errors=True)
        t0 = time.perf_counter()
        _cli(stack, state, "deploy", "--yes", "--json")
        deploy_s = time.perf_counter() - t0
        if variant == "container":  # the image mirrored to b's registry, as each `replicate` round does
            from liferaft.stack import load_stack
            from liferaft.workloads import workload
            from liferaft.workloads.container import Container

            loaded = load_stack(stack)
            Container().mirror(loaded, workload(loaded, "web"), "primary", "alt-b")
        result = json.loads(_cli(stack, state, "drill", "--to", "alt-b", "--json"))
        steps = {s["step"]: s for s in json.loads(_cli(stack, state, "show", result["run_id"], "--json"))["steps"]}
        return {"deploy_web_s": float(steps["deploy-web"]["duration_s"]), "rto_s": float(result["rto_s"]),
                "first_deploy_s": deploy_s}
    finally:
        lab.down()


def drill_bench(rounds: int, only: str | None = None) -> int:
    data: dict[str, list[dict[str, float]]] = {"playbook": [], "container": []}
    with tempfile.TemporaryDirectory(prefix="bench-containers-drill-") as d:
        for r in range(rounds):
            for variant in (["playbook", "container"] if r % 2 == 0 else ["container", "playbook"]):
                if only and variant != only:
                    continue
                data[variant].append(drill_round(variant, Path(d)))
                print(f"round {r + 1} {variant}: {data[variant][-1]}", flush=True)
    if only:
        return 0
    print(f"| the example app, median of {rounds} | container | playbook | ratio |")
    print("|---|---|---|---|")
    for key, label in (("deploy_web_s", "deploy-web step in a drill (at b, from nothing), s"),
                       ("rto_s", "drill RTO, s"), ("first_deploy_s", "`liferaft deploy` at the primary, s")):
        c = statistics.median(x[key] for x in data["container"])
        p = statistics.median(x[key] for x in data["playbook"])
        print(f"| {label} | {c:.1f} | {p:.1f} | {c / p:.2f} |")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--drill", action="store_true", help="the example's deploy in a drill: container vs playbook")
    ap.add_argument("--only", choices=("container", "playbook"), help="with --drill: one variant, no table")
    args = ap.parse_args()
    if args.drill:
        return drill_bench(args.rounds, args.only)
    with tempfile.TemporaryDirectory(prefix="bench-containers-") as d:
        work = Path(d)
        servers = {n: RegistryServer(work / "servers", "127.0.0.1", name=n).start() for n in ("src", "a", "b")}
        try:
            src = Registry(servers["src"].url, "src")
            images = []
            for i in range(args.images):
                tag = f"v{i}"
                layout = work / f"image-{i}"
                digest = build_image(layout, tag=tag, version=str(i))
                push(layout, tag, servers["src"].url, IMAGE_REPOSITORY)
                images.append(Image(IMAGE_REPOSITORY, tag, digest))
            full: dict[str, list[float]] = {"liferaft": [], "skopeo sync": []}
            again: dict[str, list[float]] = {"liferaft": [], "skopeo sync": []}
            for r in range(args.rounds):
                order = ["liferaft", "skopeo sync"] if r % 2 == 0 else ["skopeo sync", "liferaft"]
                for who in order:
                    name = "a" if who == "liferaft" else "b"
                    servers[name].stop()
                    shutil.rmtree(servers[name].data_dir, ignore_errors=True)
                    servers[name].start()
                    dst = Registry(servers[name].url, name)
                    if who == "liferaft":
                        full[who].append(timed(lambda dst=dst: mirror(src, dst, images)))
                        again[who].append(timed(lambda dst=dst: mirror(src, dst, images)))
                        assert all(dst.digest(i) == i.digest for i in images)
                    else:
                        full[who].append(timed(lambda dst=dst: skopeo_sync(src, dst)))
                        again[who].append(timed(lambda dst=dst: skopeo_sync(src, dst)))
                        assert all(dst.digest(i) == i.digest for i in images)
        finally:
            for s in servers.values():
                s.stop()
    print(f"| scenario ({args.images} images, median of {args.rounds}) | liferaft | skopeo sync | ratio |")
    print("|---|---|---|---|")
    for label, data in (("mirror into an empty registry, s", full), ("no-change mirror, s", again)):
        a, b = statistics.median(data["liferaft"]), statistics.median(data["skopeo sync"])
        print(f"| {label} | {a:.3f} | {b:.3f} | {a / b:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
