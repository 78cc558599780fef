"""An ACME (RFC 8555) client for DNS-01 certificates: certbot's `acme` library, any CA that speaks ACME v2.

Let's Encrypt, ZeroSSL, Google Trust Services, a company's step-ca -- or the lab's pebble. The DNS-01 challenge is
answered by the caller's `publish` / `unpublish` callables (the stack's independent DNS provider), so this module
knows no DNS vendor. Keys are PEM bytes held by the caller; nothing here writes a file, logs or returns a key.

    account_key = new_account_key()
    key = new_private_key()
    got = issue(AcmeSettings(directory=URL, email="ops@x"), account_key, key, ["www.x.org"],
                publish=set_txt, unpublish=clear_txt)
    got.fullchain_pem, got.account_uri, got.timings

The SDK (`acme`, `josepy`, `requests`) is imported inside the functions: `liferaft --help` stays fast.
"""

from __future__ import annotations

import datetime as _dt
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from liferaft.errors import AuthRejected, ProviderError, ToolMissing, Unreachable

PROVIDER = "acme"
INSTALL_HINT = "pip install 'acme>=3' josepy (certbot's ACME library)"

# The TXT values to publish: {"_acme-challenge.www.example.org.": ["value", ...]}
Challenges = Mapping[str, Sequence[str]]


@dataclass(frozen=True)
class AcmeSettings:
    directory: str  # the CA's ACME v2 directory URL
    email: str | None = None
    ca_bundle: str | None = None  # a PEM file trusted for the directory's HTTPS (a private CA, the lab's pebble)
    timeout: float = 120.0  # the whole order: challenges, validation, finalization


@dataclass(frozen=True)
class Issued:
    fullchain_pem: bytes  # the certificate then its chain (PEM); public
    account_uri: str
    timings: dict[str, float] = field(default_factory=dict)


def _sdk() -> Any:
    try:
        import josepy
        from acme import challenges, client, crypto_util, errors, messages
    except ImportError:
        raise ToolMissing("the ACME client library is not installed", hint=INSTALL_HINT) from None
    return josepy, challenges, client, crypto_util, errors, messages


def new_private_key() -> bytes:
    """A fresh ECDSA P-256 private key, PEM (PKCS#8, unencrypted): for a certificate or an ACME account."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


new_account_key = new_private_key


def _error(op: str, exc: BaseException, directory: str) -> ProviderError:
    """An SDK or network exception as liferaft's error naming the CA; never the request body (it is signed JWS)."""
    import requests

    _, _, _, _, errors, messages = _sdk()
    if isinstance(exc, requests.exceptions.SSLError):
        return AuthRejected(PROVIDER, op, f"{directory}: TLS verification failed ({type(exc).__name__})",
                            hint="set `ca_bundle` to the CA file that signed the ACME server's certificate")
    if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout)):
        return Unreachable(PROVIDER, op, f"{directory}: {type(exc).__name__}")
    if isinstance(exc, messages.Error):
        code = str(exc.code or exc.typ or "")
        detail = f"{exc.detail or exc.description or code}"
        if code in ("unauthorized", "accountDoesNotExist", "badPublicKey", "externalAccountRequired"):
            return AuthRejected(PROVIDER, op, detail, code=code)
        return ProviderError(PROVIDER, op, detail, code=code or None)
    if isinstance(exc, errors.ValidationError):
        why = []
        for authzr in exc.failed_authzrs:
            for ch in authzr.body.challenges:
                if ch.error is not None:
                    why.append(f"{authzr.body.identifier.value}: {ch.error.detail or ch.error.typ}")
        return ProviderError(PROVIDER, op, "the CA could not validate the DNS-01 challenge: " + "; ".join(why),
                             hint="check that the zone's authoritative server answers the _acme-challenge TXT "
                                  "record and that the CA resolves the name through it", code="validation")
    if isinstance(exc, errors.TimeoutError):
        return ProviderError(PROVIDER, op, "the CA did not finish the order in time", code="timeout")
    return ProviderError(PROVIDER, op, f"{type(exc).__name__}: {exc}"[:500])


def _client(settings: AcmeSettings, account_key_pem: bytes) -> tuple[Any, Any, str]:
    """An ACME client logged in with the account of `account_key_pem` (registered on first use)."""
    josepy, _, client, _, errors, messages = _sdk()
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = serialization.load_pem_private_key(account_key_pem, password=None)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        jwk, alg = josepy.JWKEC(key=key), josepy.ES256
    else:
        jwk, alg = josepy.JWKRSA(key=key), josepy.RS256
    net = client.ClientNetwork(jwk, alg=alg, verify_ssl=settings.ca_bundle or True, user_agent="liferaft",
                               timeout=30)
    acme = client.ClientV2(client.ClientV2.get_directory(settings.directory, net), net)
    try:
        regr = acme.new_account(messages.NewRegistration.from_data(email=settings.email,
                                                                   terms_of_service_agreed=True))
    except errors.ConflictError as e:  # this key already has an account: use it
        regr = acme.query_registration(messages.RegistrationResource(uri=e.location,
                                                                     body=messages.Registration()))
    return acme, jwk, str(regr.uri)


def account_uri(settings: AcmeSettings, account_key_pem: bytes) -> str:
    """Register (or find) the account of `account_key_pem` at the CA; its URI."""
    try:
        _, _, uri = _client(settings, account_key_pem)
    except (ProviderError, ToolMissing):
        raise
    except Exception as e:  # noqa: BLE001 - every SDK/network failure becomes a ProviderError
        raise _error("account", e, settings.directory) from None
    return uri


def issue(settings: AcmeSettings, account_key_pem: bytes, private_key_pem: bytes, names: Sequence[str], *,
          publish: Callable[[Challenges], None], unpublish: Callable[[Challenges], None],
          on_progress: Callable[[str, str], None] | None = None) -> Issued:
    """Order a certificate for `names` (the first is the subject) with DNS-01: `publish` the TXT values (and return
    once the zone's authoritative server answers them), answer the challenges, finalize with a CSR made from
    `private_key_pem`, download the chain. `unpublish` runs whatever happens once anything was published."""
    _, challenges, _, crypto_util, _, messages = _sdk()
    say = on_progress or (lambda kind, msg: None)
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    published: dict[str, list[str]] = {}
    op = "account"
    try:
        acme, jwk, uri = _client(settings, account_key_pem)
        timings["account_s"] = round(time.monotonic() - t0, 3)
        op = "order"
        csr = crypto_util.make_csr(private_key_pem, list(names))
        order = acme.new_order(csr)
        answers = []
        for authzr in order.authorizations:
            if authzr.body.status == messages.STATUS_VALID:
                continue  # the CA still holds a valid authorization for this name
            chall = next((c for c in authzr.body.challenges if isinstance(c.chall, challenges.DNS01)), None)
            if chall is None:
                raise ProviderError(PROVIDER, op, f"the CA offers no dns-01 challenge for "
                                    f"{authzr.body.identifier.value}", code="no-dns-01")
            domain = authzr.body.identifier.value
            txt_name = chall.chall.validation_domain_name(domain.removeprefix("*.")).rstrip(".") + "."
            published.setdefault(txt_name, []).append(chall.chall.validation(jwk))
            answers.append(chall)
        timings["order_s"] = round(time.monotonic() - t0 - sum(timings.values()), 3)
        if published:
            op = "dns-01"
            t = time.monotonic()
            say("tls.challenge", f"publishing {len(published)} _acme-challenge TXT record(s)")
            publish(published)
            timings["publish_s"] = round(time.monotonic() - t, 3)
        op = "validate"
        t = time.monotonic()
        for chall in answers:
            acme.answer_challenge(chall, chall.chall.response(jwk))
        deadline = _dt.datetime.now() + _dt.timedelta(seconds=settings.timeout)
        order = acme.poll_authorizations(order, deadline)
        timings["validate_s"] = round(time.monotonic() - t, 3)
        op = "finalize"
        t = time.monotonic()
        order = acme.finalize_order(order, deadline)
        timings["finalize_s"] = round(time.monotonic() - t, 3)
        chain = order.fullchain_pem
    except (ProviderError, ToolMissing):
        raise
    except Exception as e:  # noqa: BLE001 - every SDK/network failure becomes a ProviderError
        raise _error(op, e, settings.directory) from None
    finally:
        if published:
            unpublish(published)
    timings["total_s"] = round(time.monotonic() - t0, 3)
    return Issued(fullchain_pem=chain.encode() if isinstance(chain, str) else chain, account_uri=str(uri),
                  timings=timings)
