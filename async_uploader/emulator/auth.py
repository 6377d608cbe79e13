"""SigV4 verification: the signature is recomputed with botocore's own signer from what arrived."""

from __future__ import annotations

import calendar
import hmac
import time
from collections.abc import Mapping
from dataclasses import dataclass

from botocore.auth import EMPTY_SHA256_HASH, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from multidict import MultiMapping

from .errors import ApiError, denied

SIGV4_TIMESTAMP = "%Y%m%dT%H%M%SZ"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
SERVICE = "omics"


@dataclass(frozen=True)
class Authorization:
    """The parsed ``Authorization`` header."""

    access_key: str
    date: str
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str


def parse_authorization(value: str) -> Authorization:
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != "AWS4-HMAC-SHA256":
        raise denied("only AWS4-HMAC-SHA256 signatures are accepted")
    fields: dict[str, str] = {}
    for item in rest.split(","):
        name, sep, val = item.strip().partition("=")
        if sep:
            fields[name] = val
    try:
        credential = fields["Credential"].split("/")
        signed = tuple(fields["SignedHeaders"].split(";"))
        signature = fields["Signature"]
    except KeyError as exc:
        raise denied(f"Authorization header lacks {exc.args[0]}") from None
    if len(credential) != 5 or credential[4] != "aws4_request":
        raise denied("malformed credential scope in Authorization header")
    return Authorization(credential[0], credential[1], credential[2], credential[3], signed, signature)


def parse_amz_date(value: str) -> float:
    try:
        return float(calendar.timegm(time.strptime(value, SIGV4_TIMESTAMP)))
    except ValueError:
        raise denied(f"X-Amz-Date {value[:40]!r} is not in the form YYYYMMDDTHHMMSSZ") from None


def _check_signed_headers(headers: MultiMapping[str], auth: Authorization) -> None:
    """The signed headers include host, and each is in the request, as ASCII text."""
    if "host" not in auth.signed_headers:
        raise denied("the host header must be signed")
    for name in auth.signed_headers:
        if name not in headers:
            raise denied(f"signed header {name[:40]!r} is missing from the request")
        if not all(value.isascii() for value in headers.getall(name)):
            raise denied(f"signed header {name[:40]!r} is not ASCII text")


class Verifier:
    """Checks requests against a table of access key → secret key."""

    def __init__(self, credentials: Mapping[str, str], skew_limit: float = 900.0) -> None:
        self._secrets = dict(credentials)
        self.skew_limit = skew_limit

    def check_headers(self, headers: MultiMapping[str], now: float | None = None) -> Authorization:
        """Everything about the signature that the headers alone decide: run before any body byte is read."""
        header = headers.get("Authorization")
        if not header:
            raise ApiError("AccessDeniedException", "missing Authentication Token")
        auth = parse_authorization(header)
        if auth.access_key not in self._secrets:
            raise denied("The security token included in the request is invalid.")
        if auth.service != SERVICE:
            raise denied(f"credential scope names service {auth.service[:40]!r}, expected {SERVICE!r}")
        self._check_date(headers, auth, now)
        _check_signed_headers(headers, auth)
        return auth

    def _check_date(self, headers: MultiMapping[str], auth: Authorization, now: float | None) -> None:
        """X-Amz-Date is there, within the allowed skew of ``now``, and the credential scope's date."""
        amz_date = headers.get("X-Amz-Date")
        if amz_date is None:
            raise denied("missing X-Amz-Date header")
        signed_at = parse_amz_date(amz_date)
        now = time.time() if now is None else now
        if abs(now - signed_at) > self.skew_limit:
            raise denied(f"Signature expired: {amz_date} is more than {int(self.skew_limit)} s from the server time.")
        if auth.date != amz_date[:8]:
            raise denied("credential scope date does not match X-Amz-Date")

    def verify(
        self,
        method: str,
        raw_path: str,
        headers: MultiMapping[str],
        payload_hash: str,
        now: float | None = None,
    ) -> None:
        """Raise AccessDeniedException unless the request was signed with a known key.

        ``raw_path`` is the path and query exactly as they arrived, ``payload_hash`` the value that stood
        for the body in the canonical request (the ``x-amz-content-sha256`` header when signed, else
        the SHA-256 of the body).
        """
        auth = self.check_headers(headers, now)
        amz_date = headers["X-Amz-Date"]
        signed = {name: ",".join(headers.getall(name)) for name in auth.signed_headers}
        try:
            expected = self._signature(
                auth, method, f"http://{signed['host']}{raw_path}", signed, payload_hash, amz_date
            )
        except ValueError:  # a Host or path that makes no URL (``Host: [``), or text that is not ASCII
            raise denied("the request's Host header and path do not form a URL that can be signed") from None
        if not hmac.compare_digest(expected.encode(), auth.signature.encode("utf-8", "surrogateescape")):
            raise denied(
                "The request signature we calculated does not match the signature you provided. "
                "Check your AWS Secret Access Key and signing method."
            )

    def _signature(
        self, auth: Authorization, method: str, url: str, signed: dict[str, str], payload_hash: str, amz_date: str
    ) -> str:
        request = AWSRequest(method=method, url=url, headers=signed)
        request.context["timestamp"] = amz_date
        signer = SigV4Auth(Credentials(auth.access_key, self._secrets[auth.access_key]), SERVICE, auth.region)
        computed_names = signer.signed_headers(signer.headers_to_sign(request))
        if computed_names != ";".join(auth.signed_headers):
            raise denied("SignedHeaders are not in canonical form")
        canonical = signer.canonical_request(request)
        if "x-amz-content-sha256" not in signed:
            # Without the header botocore hashes the (absent) body; put the real payload hash in its place.
            head, _, last = canonical.rpartition("\n")
            assert last == EMPTY_SHA256_HASH
            canonical = f"{head}\n{payload_hash}"
        return signer.signature(signer.string_to_sign(request, canonical), request)
