"""The `aws` adapter (boto3): S3 objects, EC2 compute, Route53 DNS, STS account probe.

Every boto3 call goes through `self._call(operation, fn)`, which translates botocore errors into liferaft.errors
and retries throttling boundedly (honouring Retry-After). botocore itself is configured with short timeouts and
one retry so a dead endpoint is reported in about a second, not seven.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from liferaft.errors import AuthRejected, ProviderError, Unreachable
from liferaft.providers import _errors
from liferaft.providers._body import SHA256_META, prepare, sha256_metadata
from liferaft.providers.base import CHUNK_SIZE, ObjectInfo, ProbeResult, Provider

if TYPE_CHECKING:
    from liferaft.providers._s3fast import Answer, S3Fast

T = TypeVar("T")

CONNECT_TIMEOUT = 2.0
READ_TIMEOUT = 30.0
SINGLE_PUT_LIMIT = CHUNK_SIZE  # streamed bodies above one chunk go multipart (one in-memory chunk: see _body)
MAX_PARTS = 10_000  # S3's limit of parts per multipart upload


def _part_size(size: int | None) -> int:
    """CHUNK_SIZE parts (memory stays workers x part size), larger ones (whole MiB) where an object of known size
    would otherwise need more than S3's 10,000 parts."""
    if size is None or size <= CHUNK_SIZE * (MAX_PARTS - 1):
        return CHUNK_SIZE
    mib = 1024 * 1024
    return -(-size // ((MAX_PARTS - 1) * mib)) * mib


# HTTP connections kept per client: at least the movers' worker count (16 by default) plus listings, else
# urllib3 discards connections and every request beyond the pool pays a new TCP connection (and the server an accept).
MAX_POOL_CONNECTIONS = 64


def _fast_timestamp(value: str) -> Any:
    """botocore's default timestamp parser is dateutil's (slow: it dominated listing 2,000 keys); S3 listings
    carry ISO 8601 times, which the standard library parses directly. Anything else goes to botocore's parser."""
    from datetime import datetime

    try:
        return datetime.fromisoformat(value)
    except (TypeError, ValueError):
        from botocore.utils import parse_timestamp

        return parse_timestamp(value)


def classify(exc: BaseException, provider: str, operation: str) -> ProviderError | None:
    """botocore exception -> liferaft error (None: let the generic fallback decide)."""
    from botocore import exceptions as bx

    if isinstance(exc, bx.ClientError):
        err = exc.response.get("Error", {}) or {}
        meta = exc.response.get("ResponseMetadata", {}) or {}
        code = str(err.get("Code") or meta.get("HTTPStatusCode") or "") or None
        status = meta.get("HTTPStatusCode")
        message = str(err.get("Message") or "").strip()
        retry_after = _errors.parse_retry_after((meta.get("HTTPHeaders") or {}).get("retry-after"))
        detail = f"{code}: {message}" if message else f"{code} (HTTP {status})"
        return _errors.error_for(provider, operation, detail, status=status, code=code, retry_after=retry_after)
    if isinstance(exc, (bx.NoCredentialsError, bx.PartialCredentialsError)):
        return AuthRejected(provider, operation, "no usable credentials were configured")
    if isinstance(exc, (bx.EndpointConnectionError, bx.ConnectTimeoutError, bx.ReadTimeoutError,
                        bx.ConnectionClosedError, bx.HTTPClientError)):
        return Unreachable(provider, operation, f"endpoint did not answer ({type(exc).__name__}: {exc})")
    if isinstance(exc, bx.ParamValidationError):
        return ProviderError(provider, operation, f"invalid request: {exc}")
    return None


_CREATE_LOCK = threading.Lock()
_LOADER: list[Any] = []  # botocore's data loader, shared by every account's session in this process


def _botocore_session() -> Any:
    """A botocore session sharing one data loader with the others: the service models (megabytes of JSON) are
    read and decoded once per process instead of once per account (a sync between two aws accounts made two)."""
    import botocore.session

    session = botocore.session.get_session()
    if _LOADER:
        session.register_component("data_loader", _LOADER[0])
    else:
        _LOADER.append(session.get_component("data_loader"))
    return session


def _handle_200_error_light(operation_model: Any, response_dict: Any, **kwargs: Any) -> None:
    """botocore parses every S3 answer's XML twice: once to see whether a 200 hides an <Error> (or a body cut short
    by the network), once for real. For listings (the whole cost of a no-change resync) the same two checks are
    made on the body's ends instead; other operations keep botocore's check."""
    from botocore import handlers

    if operation_model.name != "ListObjectsV2":
        handlers._handle_200_error(operation_model=operation_model, response_dict=response_dict, **kwargs)
        return
    body = response_dict.get("body") or b""
    if response_dict.get("status_code") == 200 and body and (
            b"<Error>" in body[:512] or not body.rstrip().endswith(b"</ListBucketResult>")):
        response_dict["status_code"] = 500  # retried like botocore's own check would have it


class _ListingParser:
    """botocore's rest-xml parser, except for successful ListObjectsV2 answers: those are read with ElementTree in
    one pass (botocore's model-driven parse cost ~0.1 s of CPU per 1,000 keys: most of a no-change resync). The
    result has the fields and types botocore gives (Size int, LastModified datetime, IsTruncated bool, ...), so
    botocore's own after-call handlers (URL-decoding of keys) still apply. Any doubt -> botocore's parser."""

    _TEXT = ("Name", "Prefix", "Delimiter", "EncodingType", "ContinuationToken", "NextContinuationToken", "StartAfter")

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def parse(self, response: dict[str, Any], shape: Any) -> Any:
        if getattr(shape, "name", None) == "ListObjectsV2Output" and response.get("status_code") == 200:
            try:
                return self._parse_listing(response)
            except (ValueError, SyntaxError, KeyError, AttributeError):  # ET.ParseError is a SyntaxError
                pass
        return self._inner.parse(response, shape)

    def _parse_listing(self, response: dict[str, Any]) -> dict[str, Any]:
        from xml.etree import ElementTree

        root = ElementTree.fromstring(response["body"])
        if not root.tag.endswith("ListBucketResult"):
            raise ValueError(root.tag)
        ns = root.tag[:-len("ListBucketResult")]  # "{namespace}" (S3's, or s3rver's other one) or ""
        out: dict[str, Any] = {}
        for field in self._TEXT:
            node = root.find(ns + field)
            if node is not None:
                out[field] = node.text or ""
        for field in ("KeyCount", "MaxKeys"):
            node = root.find(ns + field)
            if node is not None and node.text:
                out[field] = int(node.text)
        out["IsTruncated"] = (root.findtext(ns + "IsTruncated") or "").strip().lower() == "true"
        contents = []
        for item in root.iterfind(ns + "Contents"):
            obj: dict[str, Any] = {"Key": item.findtext(ns + "Key") or "", "Size": int(item.findtext(ns + "Size") or 0)}
            etag = item.findtext(ns + "ETag")
            if etag is not None:
                obj["ETag"] = etag
            modified = item.findtext(ns + "LastModified")
            if modified:
                obj["LastModified"] = _fast_timestamp(modified)
            storage = item.findtext(ns + "StorageClass")
            if storage is not None:
                obj["StorageClass"] = storage
            contents.append(obj)
        if contents:
            out["Contents"] = contents
        prefixes = [{"Prefix": p.findtext(ns + "Prefix") or ""} for p in root.iterfind(ns + "CommonPrefixes")]
        if prefixes:
            out["CommonPrefixes"] = prefixes
        headers = {k.lower(): v for k, v in response["headers"].items()}
        out["ResponseMetadata"] = {"RequestId": headers.get("x-amz-request-id", ""),
                                   "HostId": headers.get("x-amz-id-2", ""),
                                   "HTTPStatusCode": 200, "HTTPHeaders": headers}
        return out


class _ParserFactory:
    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def create_parser(self, protocol: str) -> Any:
        parser = self._inner.create_parser(protocol)
        return _ListingParser(parser) if protocol == "rest-xml" else parser


# Operations on one object: their endpoint does not depend on the object's key (see _lighten_s3).
_KEYED_OPERATIONS = ("GetObject", "HeadObject", "PutObject", "DeleteObject", "CreateMultipartUpload", "UploadPart",
                     "CompleteMultipartUpload", "AbortMultipartUpload")


def _lighten_s3(client: Any) -> None:
    """Per-request costs of botocore that object sync pays thousands of times, removed for this client only:

    - `Expect: 100-continue` on every PUT (botocore adds it to any file-like body, and turns bytes bodies into
      file-like ones): one extra round trip and server write per object, and the body then goes out in 16 KiB
      reads. Bodies stay bytes and go out in one send; a rejected PUT just costs its body.
    - listings parsed by botocore's model-driven parser: see _ListingParser.
    - endpoint rules evaluated for every new key: S3's rule set declares a `Key` parameter but no rule reads it,
      yet it is part of the cache key of the resolved endpoint, so every object missed the cache. Dropping it from
      the operations' context parameters makes the endpoint cached per bucket; the resolved endpoint is the same.
    Best effort: if botocore's internals differ, requests simply keep their default behaviour."""
    from botocore import handlers

    events = client.meta.events
    try:
        events.unregister("before-call.s3", handlers.add_expect_header)
        for op in ("PutObject", "UploadPart"):
            events.unregister(f"before-parameter-build.s3.{op}", handlers.convert_body_to_file_like_object)
    except AttributeError:  # pragma: no cover - a botocore without these handlers
        pass
    try:
        events.unregister("before-parse.s3.*", handlers._handle_200_error)
        events.register_first("before-parse.s3.*", _handle_200_error_light)
    except AttributeError:  # pragma: no cover
        pass
    endpoint = getattr(client, "_endpoint", None)
    if endpoint is not None and hasattr(endpoint, "_response_parser_factory"):
        endpoint._response_parser_factory = _ParserFactory(endpoint._response_parser_factory)
    try:
        model = client.meta.service_model
        for name in _KEYED_OPERATIONS:
            params = model.operation_model(name).context_parameters  # cached list, read when first called
            params[:] = [p for p in params if p.name != "Key"]
    except (AttributeError, TypeError):  # pragma: no cover
        pass


class AwsClients:
    """boto3 clients for one account, created lazily (importing boto3 costs ~0.3 s) and shared by capabilities."""

    def __init__(self, name: str, region: str, endpoint: str | None, access_key_id: str | None,
                 secret_access_key: str | None, session_token: str | None = None) -> None:
        self.name = name
        self.region = region
        self.endpoint = endpoint
        self.__creds = (access_key_id, secret_access_key, session_token)
        self._clients: dict[str, Any] = {}
        self._session: Any = None
        self._fast: S3Fast | None = None  # the lean S3 path, when it applies to this account
        self._fast_checked = False
        self._lock = threading.Lock()

    def __repr__(self) -> str:  # never show credentials
        return f"AwsClients(name={self.name!r}, region={self.region!r}, endpoint={self.endpoint!r})"

    def client(self, service: str) -> Any:
        with self._lock:
            if service not in self._clients:
                import boto3
                from botocore.config import Config

                config = Config(
                    connect_timeout=CONNECT_TIMEOUT, read_timeout=READ_TIMEOUT,
                    # One retry in all: botocore's `max_attempts` counts RETRIES (2 would mean 3 calls);
                    # `total_max_attempts` counts calls. Throttling is retried further by _errors.call.
                    retries={"total_max_attempts": 2, "mode": "standard"},
                    # Path-style when an endpoint is set: S3-compatible servers (moto, MinIO) rarely do vhost DNS.
                    # No SigV4 hash of the payload: that is a second sha256 pass over every byte sent, in this
                    # process. Integrity of what is sent stays end to end: single PUTs carry our own sha256 as
                    # x-amz-checksum-sha256 (signed header, verified by S3), parts a CRC32 checksum (botocore's
                    # default), and the movers hash every byte they read.
                    s3={"addressing_style": "path" if self.endpoint else "auto", "payload_signing_enabled": False},
                    max_pool_connections=MAX_POOL_CONNECTIONS,
                    # The adapter's calls have fixed, tested shapes: botocore's walk of every request's parameters
                    # against the model is ~4% of the CPU of copying small objects. Servers still validate.
                    parameter_validation=False,
                )
                with _CREATE_LOCK:  # one at a time: the second account's client then finds the models loaded
                    if self._session is None:  # one session per account
                        key, secret, token = self.__creds
                        self._session = boto3.session.Session(
                            aws_access_key_id=key, aws_secret_access_key=secret, aws_session_token=token,
                            region_name=self.region, botocore_session=_botocore_session())
                        self._session._session.get_component("response_parser_factory").set_parser_defaults(
                            timestamp_parser=_fast_timestamp)
                    client = self._session.client(service, endpoint_url=self.endpoint, config=config)
                if service == "s3":
                    _lighten_s3(client)
                self._clients[service] = client
            return self._clients[service]

    def fast_s3(self) -> S3Fast | None:
        """The lean S3 request path for this account (see _s3fast), or None where it does not apply (no static
        credentials, a proxy, ...): boto3 then serves every request."""
        if self._fast_checked:
            return self._fast
        with self._lock:
            if not self._fast_checked:
                from liferaft.providers import _s3fast

                key, secret, token = self.__creds
                if key and secret and _s3fast.usable(self.endpoint, self.region, key, secret):
                    self._fast = _s3fast.S3Fast(self.name, self.region, self.endpoint, key, secret, token,
                                                connect_timeout=CONNECT_TIMEOUT, read_timeout=READ_TIMEOUT,
                                                pool_size=MAX_POOL_CONNECTIONS)
                self._fast_checked = True
            return self._fast

    def call(self, operation: str, fn: Callable[[], T]) -> T:
        return _errors.call(self.name, operation, self._classify, fn)

    def _classify(self, exc: BaseException, provider: str, operation: str) -> ProviderError | None:
        err = classify(exc, provider, operation)
        if isinstance(err, Unreachable) and self.endpoint:
            err = Unreachable(provider, operation, f"{self.endpoint} did not answer ({type(exc).__name__})")
        return err


# ---------------------------------------------------------------------------------------------------- S3
class AwsObjects:
    """S3. sha256 lives in the x-amz-meta-liferaft-sha256 metadata; listing does not return metadata, so
    list_objects(hashes=True) costs one HEAD per object and is only done when asked."""

    def __init__(self, clients: AwsClients, *, page_size: int = 1000) -> None:
        self._c = clients
        self.page_size = page_size

    @property
    def _s3(self) -> Any:
        return self._c.client("s3")

    def _lean(self, bucket: str) -> S3Fast | None:
        """The lean request path for GET/HEAD/single PUT of an object in `bucket`, if it serves this bucket."""
        fast = self._c.fast_s3()
        return fast if fast is not None and fast.serves(bucket) else None

    def _try_lean(self, operation: str, bucket: str, fn: Callable[[S3Fast], T]) -> T | None:
        """fn over the lean path, with the adapter's retry policy; None: boto3 must do it (no lean path for this
        account or bucket, or the bucket redirected to another region)."""
        from liferaft.providers._s3fast import UseBoto3

        fast = self._lean(bucket)
        if fast is None:
            return None

        def attempt() -> T | None:
            try:
                return fn(fast)
            except UseBoto3:
                return None

        return self._c.call(operation, attempt)

    def create_bucket(self, bucket: str) -> None:
        kwargs: dict[str, Any] = {"Bucket": bucket}
        if self._c.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self._c.region}
        try:
            self._c.call(f"create bucket {bucket}", lambda: self._s3.create_bucket(**kwargs))
        except ProviderError as exc:
            if exc.code == "BucketAlreadyOwnedByYou":  # ours already: idempotent success
                return
            raise

    def bucket_exists(self, bucket: str) -> bool:
        try:
            self._c.call(f"head bucket {bucket}", lambda: self._s3.head_bucket(Bucket=bucket))
            return True
        except ProviderError as exc:
            if exc.status == 404 or exc.code in ("NoSuchBucket", "404"):
                return False
            raise

    def delete_bucket(self, bucket: str) -> None:
        """Delete an empty bucket (test and drill cleanup); a missing bucket is not an error."""
        try:
            self._c.call(f"delete bucket {bucket}", lambda: self._s3.delete_bucket(Bucket=bucket))
        except ProviderError as exc:
            if exc.status != 404:
                raise

    def list_objects(self, bucket: str, prefix: str = "", *, hashes: bool = False) -> Iterator[ObjectInfo]:
        op = f"list objects in {bucket}"
        token: str | None = None
        while self._lean(bucket) is not None:
            page = self._try_lean(op, bucket, lambda fast, t=token: fast.list_page(  # type: ignore[misc]
                op, bucket, prefix, self.page_size, t))
            if page is None:  # the bucket redirected (another region): boto3 lists it, from the start
                if token is not None:
                    raise ProviderError(self._c.name, op, "the bucket redirected in the middle of a listing")
                break
            for item in page.items:
                info = ObjectInfo(key=item.key, size=item.size, etag=item.etag, modified=item.modified)
                yield self.head_object(bucket, info.key) if hashes else info
            if not page.truncated:
                return
            token = page.next_token
        token = None
        while True:
            kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": self.page_size}
            if token:
                kwargs["ContinuationToken"] = token
            page = self._c.call(f"list objects in {bucket}",
                                lambda k=kwargs: self._s3.list_objects_v2(**k))  # type: ignore[misc]
            for item in page.get("Contents", []):
                info = ObjectInfo(key=item["Key"], size=int(item["Size"]), etag=str(item["ETag"]).strip('"'),
                                  modified=item["LastModified"].timestamp())
                yield self.head_object(bucket, info.key) if hashes else info
            if not page.get("IsTruncated"):
                return
            token = page.get("NextContinuationToken")

    def head_object(self, bucket: str, key: str) -> ObjectInfo:
        op = f"head object {bucket}/{key}"
        answer = self._try_lean(op, bucket, lambda fast: fast.head(op, bucket, key))
        if answer is not None:
            return _info_from_headers(key, answer)
        r = self._c.call(op, lambda: self._s3.head_object(Bucket=bucket, Key=key))
        return ObjectInfo(key=key, size=int(r["ContentLength"]), sha256=(r.get("Metadata") or {}).get(SHA256_META),
                          etag=str(r.get("ETag", "")).strip('"') or None, modified=r["LastModified"].timestamp())

    def get_object(self, bucket: str, key: str, *, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        op = f"get object {bucket}/{key}"
        got = self._try_lean(op, bucket, lambda fast: fast.get(op, bucket, key, chunk_size))
        if got is not None:
            return got[1]
        r = self._c.call(op, lambda: self._s3.get_object(Bucket=bucket, Key=key))
        return self._stream(op, r["Body"], chunk_size)

    def _stream(self, op: str, body: Any, chunk_size: int) -> Iterator[bytes]:
        try:
            with _errors.translating(self._c.name, op, self._c._classify):
                yield from body.iter_chunks(chunk_size)  # part-sized: passed through to multipart uncopied
        finally:
            body.close()

    def put_object(self, bucket: str, key: str, chunks: Iterable[bytes], *, size: int | None = None,
                   sha256: str | None = None, store_sha256: bool = True) -> ObjectInfo:
        """One PUT for a body in memory, multipart otherwise. The ObjectInfo comes from the upload's own answer
        (ETag) and what was sent (size, sha256): no HEAD afterwards. `store_sha256=False`: a large body whose
        sha256 is not known up front goes up part by part as it streams, without the sha256 metadata."""
        part_size = _part_size(size)
        body = prepare(chunks, sha256, size, part_size=part_size, store_sha256=store_sha256)
        try:
            if body.small is not None:
                data, op, digest = body.small, f"put object {bucket}/{key}", body.sha256
                assert digest is not None  # a body in memory is always hashed
                answer = self._try_lean(op, bucket, lambda fast: fast.put(op, bucket, key, data, digest,
                                                                           sha256_metadata(digest)))
                if answer is not None:
                    etag: str | None = answer.etag
                else:
                    checksum = base64.b64encode(bytes.fromhex(digest)).decode()
                    r = self._c.call(op, lambda: self._s3.put_object(
                        Bucket=bucket, Key=key, Body=data, Metadata=sha256_metadata(digest),
                        ChecksumSHA256=checksum))
                    etag = r.get("ETag")
                sent = len(data)
            else:
                etag, sent = self._multipart(bucket, key, body.blocks(part_size), body.sha256, verify=body.verify)
        finally:
            body.close()
        return ObjectInfo(key=key, size=sent, sha256=body.sha256, etag=str(etag or "").strip('"') or None)

    def _multipart(self, bucket: str, key: str, blocks: Iterator[bytes], sha256: str | None,
                   verify: Callable[[str, str], None]) -> tuple[str | None, int]:
        op = f"multipart upload {bucket}/{key}"
        up = self._c.call(op, lambda: self._s3.create_multipart_upload(
            Bucket=bucket, Key=key, Metadata=sha256_metadata(sha256)))
        upload_id = up["UploadId"]
        parts: list[dict[str, Any]] = []
        sent = 0
        try:
            for number, block in enumerate(blocks, start=1):
                r = self._c.call(f"{op} part {number}", lambda b=block, n=number: self._s3.upload_part(  # type: ignore[misc]
                    Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=n, Body=b))
                parts.append({"PartNumber": number, "ETag": r["ETag"]})
                sent += len(block)
                del block  # the part is sent: do not keep it alive while the next one is read
            verify(self._c.name, key)  # a declared sha256 that does not match: abort before the object exists
            done = self._c.call(op, lambda: self._s3.complete_multipart_upload(
                Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}))
            return done.get("ETag"), sent
        except BaseException:
            try:
                self._s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
            except Exception:  # noqa: BLE001, S110 - best effort; the original error is what matters
                pass
            raise

    def delete_object(self, bucket: str, key: str) -> None:
        try:
            self._c.call(f"delete object {bucket}/{key}", lambda: self._s3.delete_object(Bucket=bucket, Key=key))
        except ProviderError as exc:
            if exc.code != "NoSuchKey":
                raise


def _info_from_headers(key: str, answer: Answer) -> ObjectInfo:
    """ObjectInfo from a HEAD's headers (the lean path's; boto3's parsed answer carries the same fields)."""
    from email.utils import parsedate_to_datetime

    h = answer.headers
    modified = h.get("last-modified")
    return ObjectInfo(key=key, size=int(h.get("content-length") or 0), sha256=h.get(f"x-amz-meta-{SHA256_META}"),
                      etag=answer.etag, modified=parsedate_to_datetime(modified).timestamp() if modified else None)


# ---------------------------------------------------------------------------------------------------- STS
class AwsAccount:
    """STS GetCallerIdentity: the cheapest call that proves the credentials are accepted."""

    def __init__(self, clients: AwsClients) -> None:
        self._c = clients

    def probe(self) -> ProbeResult:
        start = time.monotonic()
        r = self._c.call("sts get-caller-identity", lambda: self._c.client("sts").get_caller_identity())
        return ProbeResult(latency_s=time.monotonic() - start, account=r.get("Account"),
                           detail=f"region {self._c.region}")


class AwsAdapter:
    """One AWS account: S3, EC2, Route53, STS through boto3. `endpoint` None means real AWS."""

    def __init__(self, name: str, region: str = "us-east-1", endpoint: str | None = None,
                 access_key_id: str | None = None, secret_access_key: str | None = None, *,
                 session_token: str | None = None, ssh_user: str = "root", private_key_file: str | None = None,
                 key_name: str | None = None, image: str | None = None, instance_type: str | None = None) -> None:
        from liferaft.providers._aws_more import AwsCompute, AwsDNS

        self.name = name
        self.clients = AwsClients(name, region, endpoint, access_key_id, secret_access_key, session_token)
        self.objects = AwsObjects(self.clients)
        self.compute = AwsCompute(self.clients, ssh_user=ssh_user, private_key_file=private_key_file,
                                  key_name=key_name, image=image, instance_type=instance_type)
        self.dns = AwsDNS(self.clients)
        self.account = AwsAccount(self.clients)

    def __repr__(self) -> str:
        return f"AwsAdapter({self.clients!r})"

    def provider(self, capabilities: Iterable[str] = ("compute", "objects", "dns", "account")) -> Provider:
        wanted = set(capabilities)
        return Provider(name=self.name, type="aws", **{c: getattr(self, c) for c in wanted if c != "type"})
