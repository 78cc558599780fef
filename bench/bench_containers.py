"""Mirroring container images: liferaft's mirror (what `replicate` does per image: a digest check at the target,
`skopeo copy --preserve-digests` when it lacks it) vs `skopeo sync` alone, between two local distribution registries.

Run: python -m bench.bench_containers [--images N] [--rounds R]
No root needed: it starts two `docker-registry` processes on loopback, builds N distinct images offline (the lab's
busybox image, each with its own /www/version) and pushes them to the first. Then, alternating who goes first
(each time into an empty target): a full mirror, and a no-change mirror (everything already there). Prints one table
of medians and ratios (liferaft / skopeo sync; below 1 is faster). The machine is shared: compare the ratios.
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


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
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
