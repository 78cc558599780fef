"""The `libcloud` adapter: any libcloud storage, DNS or compute driver, chosen by driver name and settings.

One provider entry may configure any of the three sections; each becomes a capability. Settings other than
`driver` are passed to the libcloud driver constructor (host, port, secure, region, api_version, ...), plus a few
liferaft settings documented on each class. Server quirks are handled here, each named where it is handled.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from typing import Any

from liferaft.errors import AuthRejected, NotFound, ProviderError, UsageError
from liferaft.providers import _errors
from liferaft.providers._body import SHA256_META, prepare, sha256_metadata
from liferaft.providers._libcloud_common import Section, classify
from liferaft.providers.base import CHUNK_SIZE, ObjectInfo, ProbeResult, Provider

S3_NAMESPACE_DEFAULT = "http://s3.amazonaws.com/doc/2006-03-01/"


# ---------------------------------------------------------------------------------------------------- storage
class LibcloudObjects(Section):
    """Objects through a libcloud storage driver.

    liferaft settings: `multipart` (true/false/auto), `path` (the directory, for the `local` driver).
    The sha256 is stored as `liferaft-sha256` user metadata where the driver keeps metadata (S3 family);
    the `local` driver keeps none, so its sha256 is computed from the file itself on head.
    """

    kind = "storage"

    def __init__(self, provider: str, settings: dict[str, Any], key: str | None, secret: str | None) -> None:
        settings = dict(settings)
        self.multipart: bool | None = settings.pop("multipart", None)
        super().__init__(provider, settings, key, secret)
        self._namespace: str | None = None

    @property
    def is_local(self) -> bool:
        return self.driver_name == "local"

    def _build(self, cls: Any, settings: dict[str, Any], key: str | None, secret: str | None) -> Any:
        if self.is_local:
            # The local driver's "key" is the directory; it takes no secret and no timeout.
            path = str(settings.pop("path", key or ""))
            if not path:
                raise UsageError(f"provider {self.provider!r}: the local storage driver needs `path`")
            os.makedirs(path, exist_ok=True)
            return cls(path)
        driver = super()._build(cls, settings, key, secret)
        if self.multipart is not None and hasattr(driver, "supports_s3_multipart_upload"):
            driver.supports_s3_multipart_upload = bool(self.multipart)
        return driver

    def _s3(self) -> Any:
        """This thread's driver, with the S3 XML namespace detected once per section (S3 family only)."""
        driver = self.driver
        if hasattr(driver, "namespace") and hasattr(driver, "supports_s3_multipart_upload"):
            if self._namespace is None:
                self._namespace = self._detect_namespace(driver)
            if driver.namespace != self._namespace:
                driver.namespace = self._namespace
                # s3rver's multipart upload does not work with libcloud either: off there unless set.
                if self.multipart is None:
                    driver.supports_s3_multipart_upload = False
        return driver

    def _detect_namespace(self, driver: Any) -> str:
        # Quirk (s3rver): it answers in the XML namespace http://doc.s3.amazonaws.com/2006-03-01/ instead of
        # S3's; libcloud's parser then finds nothing and silently lists nothing. Read the namespace of the
        # service's own answer (GET /, the bucket list) and parse with it.
        resp = self.call("list buckets", lambda: driver.connection.request("/"))
        tag = getattr(resp.object, "tag", "")
        return tag[1:].split("}", 1)[0] if tag.startswith("{") else str(driver.namespace)

    def _container(self, bucket: str) -> Any:
        from libcloud.storage.base import Container

        return Container(name=bucket, extra={}, driver=self._s3())

    def create_bucket(self, bucket: str) -> None:
        try:
            self.call(f"create bucket {bucket}", lambda: self._s3().create_container(bucket))
        except ProviderError as exc:
            if exc.status != 409:
                raise
            # ContainerAlreadyExistsError is raised for ours (BucketAlreadyOwnedByYou) and for someone else's;
            # a bucket we can read is ours.
            if not self.bucket_exists(bucket):
                raise

    def bucket_exists(self, bucket: str) -> bool:
        try:
            self.call(f"get bucket {bucket}", lambda: self._s3().get_container(bucket))
            return True
        except NotFound:
            return False

    def delete_bucket(self, bucket: str) -> None:
        try:
            self.call(f"delete bucket {bucket}", lambda: self._s3().delete_container(self._container(bucket)))
        except NotFound:
            return

    def list_objects(self, bucket: str, prefix: str = "", *, hashes: bool = False) -> Iterator[ObjectInfo]:
        op = f"list objects in {bucket}"
        if not self.is_local:
            self.call(op, lambda: self._s3().get_container(bucket))  # NotFound for a missing bucket, up front
        driver = self._s3()
        container = self._container(bucket)
        if self.is_local:
            yield from self._local_listing(op, bucket, prefix, hashes)
            return
        it = self.call(op, lambda: driver.iterate_container_objects(container, prefix=prefix or None))
        with _errors.translating(self.provider, op, classify):
            for obj in it:
                info = self._to_info(obj)
                yield self.head_object(bucket, obj.name) if hashes and info.sha256 is None else info

    def _local_listing(self, op: str, bucket: str, prefix: str, hashes: bool) -> Iterator[ObjectInfo]:
        """The local driver's objects in key order, walked lazily. libcloud's own listing stats every file into an
        Object, holds them all and sorts them (~1 KB per object: a GB at a million); this walks one directory at a
        time, each sorted so that a subdirectory `a` sorts as its keys `a/...` do (after `a-b`, before `a0`), and
        never enters a directory outside `prefix`. ETag and times as libcloud's local driver makes them (the md5
        of the file's mtime), so manifests written before keep matching."""
        import hashlib

        from libcloud.storage.drivers.local import IGNORE_FOLDERS

        self.call(op, lambda: self._s3().get_container(bucket))  # NotFound for a missing bucket, up front
        root = os.path.join(self.driver.base_path, bucket)

        def walk(path: str, rel: str) -> Iterator[ObjectInfo]:
            with os.scandir(path) as it:
                entries = sorted(((e.name + "/", e) if e.is_dir() else (e.name, e) for e in it
                                  if not (e.name in IGNORE_FOLDERS and e.is_dir())), key=lambda p: p[0])
            for name, entry in entries:
                key = rel + name
                if name.endswith("/"):
                    if not entry.is_symlink() and (key.startswith(prefix) or prefix.startswith(key)):
                        yield from walk(entry.path, key)
                elif key.startswith(prefix):
                    st = entry.stat()
                    info = ObjectInfo(key=key, size=st.st_size, etag=hashlib.md5(str(st.st_mtime).encode("ascii"),
                                                                                    usedforsecurity=False).hexdigest(),
                                      modified=st.st_mtime)
                    yield self.head_object(bucket, key) if hashes else info

        with _errors.translating(self.provider, op, classify):
            yield from walk(root, "")

    def _to_info(self, obj: Any) -> ObjectInfo:
        extra = obj.extra or {}
        modified: Any = extra.get("modify_time") or extra.get("last_modified")
        if isinstance(modified, str):
            modified = _timestamp(modified)
        meta = {k.lower(): v for k, v in (obj.meta_data or {}).items()}
        return ObjectInfo(key=obj.name, size=int(obj.size or 0), sha256=meta.get(SHA256_META),
                          etag=(obj.hash or "").strip('"') or None,
                          modified=float(modified) if isinstance(modified, (int, float)) else None)

    def _object(self, bucket: str, key: str) -> Any:
        """A libcloud Object to hand to the driver without asking the server (no HEAD)."""
        from libcloud.storage.base import Object

        return Object(name=key, size=0, hash="", extra={}, meta_data={}, container=self._container(bucket),
                      driver=self._s3())

    def _head(self, bucket: str, key: str) -> Any:
        """The object's headers: one HEAD. libcloud's S3 get_object HEADs the bucket first (a second request
        per call); the S3 family is asked directly, other drivers through get_object."""
        driver = self._s3()
        if self.is_local or not hasattr(driver, "_headers_to_object"):
            return driver.get_object(bucket, key)
        from libcloud.storage.types import ObjectDoesNotExistError

        container = self._container(bucket)
        response = driver.connection.request(driver._get_object_path(container, key), method="HEAD")
        if response.status != 200:
            raise ObjectDoesNotExistError(value=None, driver=driver, object_name=key)  # type: ignore[no-untyped-call]
        return driver._headers_to_object(object_name=key, container=container, headers=response.headers)

    def head_object(self, bucket: str, key: str) -> ObjectInfo:
        obj = self.call(f"head object {bucket}/{key}", lambda: self._head(bucket, key))
        info = self._to_info(obj)
        if self.is_local and info.sha256 is None:
            info = ObjectInfo(key=info.key, size=info.size, sha256=self._local_sha256(bucket, key),
                              etag=info.etag, modified=info.modified)
        return info

    def _local_sha256(self, bucket: str, key: str) -> str:
        import hashlib

        h = hashlib.sha256()
        for block in self.get_object(bucket, key):
            h.update(block)
        return h.hexdigest()

    def get_object(self, bucket: str, key: str, *, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        op = f"get object {bucket}/{key}"
        # S3 family: one GET (a missing object answers 404 -> NotFound); libcloud's get_object would first HEAD
        # the bucket and the object. The local driver needs its own Object (it reads the file's path from it).
        if self.is_local:
            obj = self.call(op, lambda: self._s3().get_object(bucket, key))
        else:
            obj = self._object(bucket, key)
        stream = self.call(op, lambda: self._s3().download_object_as_stream(obj, chunk_size=chunk_size))
        return self._stream(op, stream)

    def _stream(self, op: str, stream: Iterator[bytes]) -> Iterator[bytes]:
        with _errors.translating(self.provider, op, classify):
            for block in stream:
                if block:
                    yield bytes(block)

    def put_object(self, bucket: str, key: str, chunks: Iterable[bytes], *, size: int | None = None,
                   sha256: str | None = None, store_sha256: bool = True) -> ObjectInfo:
        op = f"put object {bucket}/{key}"
        body = prepare(chunks, sha256, size, store_sha256=store_sha256)
        try:
            extra = {"meta_data": sha256_metadata(body.sha256)}
            driver = self._s3()
            if body.small is not None and hasattr(driver, "supports_s3_multipart_upload"):
                # libcloud's S3 driver uploads EVERY stream as multipart (3 requests, "-1" ETags); one PUT is
                # enough below one chunk. _put_object is the driver's own single-PUT path (pinned libcloud 3.9).
                data = body.small
                obj = self.call(op, lambda: driver._put_object(
                    container=self._container(bucket), object_name=key, extra=extra, method="PUT",
                    query_args=None, stream=iter([data]), verify_hash=False))
            else:
                obj = self.call(op, lambda: driver.upload_object_via_stream(
                    body.blocks(), self._container(bucket), key, extra=extra))
            try:
                body.verify(self.provider, key)
            except Exception:
                self.delete_object(bucket, key)  # never leave a body that is not what the caller declared
                raise
        finally:
            body.close()
        if self.is_local:  # the local driver's Object carries no hash of ours: read it back as before
            return self.head_object(bucket, key)
        # The upload's own answer (ETag, bytes sent) and the sha256 we hashed: no HEAD after the PUT.
        size = body.size if body.size is not None else int(getattr(obj, "size", None) or 0)
        return ObjectInfo(key=key, size=size, sha256=body.sha256,
                          etag=(getattr(obj, "hash", None) or "").strip('"') or None)

    def delete_object(self, bucket: str, key: str) -> None:
        from libcloud.storage.base import Object

        if self.is_local:
            try:
                obj = self.call(f"head object {bucket}/{key}", lambda: self._s3().get_object(bucket, key))
            except NotFound:
                return
        else:
            obj = Object(name=key, size=0, hash="", extra={}, meta_data={}, container=self._container(bucket),
                         driver=self._s3())
        try:
            self.call(f"delete object {bucket}/{key}", lambda: self._s3().delete_object(obj))
        except NotFound:
            return

    def probe(self) -> ProbeResult:
        start = time.monotonic()
        if self.is_local:
            path = self.driver.key
            if not os.access(path, os.W_OK):
                raise AuthRejected(self.provider, "probe local storage", f"directory {path} is not writable")
            return ProbeResult(latency_s=time.monotonic() - start, detail=f"local directory {path}")
        driver = self._s3()
        first = self.call("list buckets", lambda: next(iter(driver.iterate_containers()), None))
        n = "at least one bucket" if first else "no buckets"
        return ProbeResult(latency_s=time.monotonic() - start, detail=f"{self.driver_name}: {n}")


def _timestamp(text: str) -> float | None:
    """An HTTP date (S3 HEAD) or an ISO 8601 time (S3 listings) as unix time."""
    from datetime import datetime
    from email.utils import parsedate_to_datetime

    try:
        return parsedate_to_datetime(text).timestamp()
    except (TypeError, ValueError):
        pass
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


class LibcloudAdapter:
    """One libcloud provider entry: any of storage / dns / compute, with one set of credentials."""

    def __init__(self, name: str, *, storage: dict[str, Any] | None = None, dns: dict[str, Any] | None = None,
                 compute: dict[str, Any] | None = None, key: str | None = None, secret: str | None = None,
                 ssh_user: str = "root", private_key_file: str | None = None) -> None:
        from liferaft.providers._libcloud_more import LibcloudCompute, LibcloudDNS

        self.name = name
        self.objects = LibcloudObjects(name, storage, key, secret) if storage else None
        self.dns = LibcloudDNS(name, dns, key, secret) if dns else None
        self.compute = (LibcloudCompute(name, compute, key, secret, ssh_user=ssh_user,
                                        private_key_file=private_key_file) if compute else None)
        self.account = LibcloudAccount(name, [s for s in (self.objects, self.dns, self.compute) if s])

    def __repr__(self) -> str:
        return f"LibcloudAdapter(name={self.name!r}, objects={self.objects!r}, dns={self.dns!r})"

    def provider(self, capabilities: Iterable[str] | None = None) -> Provider:
        wanted = set(capabilities) if capabilities is not None else {"objects", "dns", "compute", "account"}
        return Provider(name=self.name, type="libcloud",
                        **{c: getattr(self, c) for c in wanted if getattr(self, c) is not None})


class LibcloudAccount:
    """A cheap authenticated list call per configured section (bucket list, zone list, node list)."""

    def __init__(self, name: str, sections: list[Section]) -> None:
        self.name = name
        self.sections = sections

    def probe(self) -> ProbeResult:
        if not self.sections:
            raise UsageError(f"provider {self.name!r}: no storage, dns or compute section is configured")
        start = time.monotonic()
        details = [s.probe().detail for s in self.sections]
        return ProbeResult(latency_s=time.monotonic() - start, detail="; ".join(details))
