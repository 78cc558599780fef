#!/usr/bin/env python3
"""Seed the microblog with a realistic dataset through its HTTP API (so every row and object is one the app made).

    seed.py --url http://10.213.7.11:8080 --posts 10000 --images 500 --max-image-bytes 3145728

Posts come from ~200 authors with text of varied length; `--images` of them carry a valid PNG whose size is spread
log-uniformly between 2 KiB and `--max-image-bytes` (mixed small and large objects, as real uploads are). Deterministic
for a given --seed. Standard library only. Importable: `seed(url, posts=..., images=..., ...)` -> SeedReport.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import struct
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

SYLLABLES = ("ka", "lo", "mi", "ra", "te", "vo", "sun", "ber", "dal", "fin", "gro", "hex", "jun", "pel", "quo",
             "sar", "tin", "ul", "wen", "zed", "an", "el", "or", "is", "um")


@dataclass(frozen=True)
class SeedReport:
    posts: int
    images: int
    image_bytes: int
    duration_s: float
    posts_per_s: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def png_of_size(rng: random.Random, size: int) -> bytes:
    """A valid grayscale PNG of about `size` bytes (random pixels, stored uncompressed-ish)."""
    width = 256
    height = max(1, size // (width + 1))
    raw = b"".join(b"\x00" + rng.randbytes(width) for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 0)) + chunk(b"IEND", b""))


def _words(rng: random.Random, n: int) -> str:
    return " ".join("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 4))) for _ in range(n))


def _post(url: str, author: str, body: str, image: bytes | None, timeout: float) -> int:
    if image is None:
        req = urllib.request.Request(url + "/posts", method="POST",
                                     data=json.dumps({"author": author, "body": body}).encode(),
                                     headers={"Content-Type": "application/json"})
    else:
        q = urllib.parse.urlencode({"author": author, "body": body})
        req = urllib.request.Request(f"{url}/posts?{q}", data=image, method="POST",
                                     headers={"Content-Type": "image/png"})
    for attempt in range(3):
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return int(json.loads(resp.read())["id"])
        except urllib.error.HTTPError as e:
            if e.code < 500 or attempt == 2:
                raise RuntimeError(f"POST /posts answered {e.code}: {e.read()[:200]!r}") from None
        except OSError:
            if attempt == 2:
                raise
        time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def seed(url: str, *, posts: int = 10_000, images: int = 500, max_image_bytes: int = 3 * 1024 * 1024,
         min_image_bytes: int = 2048, concurrency: int = 8, rng_seed: int = 7, timeout: float = 30.0,
         on_progress: Any = None) -> SeedReport:
    """Create `posts` posts, `images` of them with a PNG attached, through the app at `url`."""
    if images > posts:
        raise ValueError("images cannot exceed posts")
    url = url.rstrip("/")
    rng = random.Random(rng_seed)
    authors = [_words(rng, 1).replace(" ", "") + str(i) for i in range(200)]
    with_image = set(rng.sample(range(posts), images))
    lo, hi = math.log(min_image_bytes), math.log(max(min_image_bytes, max_image_bytes))
    # Sizes and content are fixed up front so the dataset depends only on the seed, not on thread timing.
    plan = [(i, rng.choice(authors), _words(rng, rng.randint(3, 60)),
             int(math.exp(rng.uniform(lo, hi))) if i in with_image else None, rng.getrandbits(32))
            for i in range(posts)]
    t0 = time.monotonic()
    done = 0
    total_bytes = 0

    def one(item: tuple[int, str, str, int | None, int]) -> int:
        _, author, body, size, img_seed = item
        image = png_of_size(random.Random(img_seed), size) if size else None
        _post(url, author, body, image, timeout)
        return len(image) if image else 0

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        for nbytes in pool.map(one, plan):
            done += 1
            total_bytes += nbytes
            if on_progress is not None and done % 500 == 0:
                on_progress({"posts": done, "of": posts})
    elapsed = time.monotonic() - t0
    return SeedReport(posts=posts, images=images, image_bytes=total_bytes, duration_s=round(elapsed, 3),
                      posts_per_s=round(posts / elapsed, 1) if elapsed else 0.0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", required=True, help="the app's base URL")
    ap.add_argument("--posts", type=int, default=10_000)
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--max-image-bytes", type=int, default=3 * 1024 * 1024)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)
    report = seed(args.url, posts=args.posts, images=args.images, max_image_bytes=args.max_image_bytes,
                  concurrency=args.concurrency, rng_seed=args.seed)
    print(json.dumps(report.to_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
