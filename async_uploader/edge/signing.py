"""SigV4 signing: the one place botocore's signer is called.

``CredentialSource`` resolves credentials through botocore's usual chain (environment, shared files and
profiles, SSO, container and instance roles) once, and asks botocore for a frozen snapshot on every
signature, so refreshable credentials are renewed by botocore itself when they near expiry.
``Signer.sign`` signs one request with ``botocore.auth.SigV4Auth`` for service ``omics``. No secret ever
reaches a repr, a log line or an exception message.
"""

from __future__ import annotations

from collections.abc import Mapping

import botocore.auth
import botocore.awsrequest
import botocore.credentials
import botocore.exceptions
import botocore.session

from ..core.errors import CredentialsError

__all__ = ["SERVICE_NAME", "UNSIGNED_PAYLOAD", "CredentialSource", "Signer", "session_region"]

SERVICE_NAME = "omics"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
_CONTENT_SHA256 = "X-Amz-Content-SHA256"


def _session(profile: str | None) -> botocore.session.Session:
    try:
        return botocore.session.Session(profile=profile)
    except botocore.exceptions.BotoCoreError as exc:
        raise CredentialsError(f"cannot load AWS configuration: {type(exc).__name__}") from None


def session_region(profile: str | None = None) -> str | None:
    """The region botocore's configuration names (AWS_REGION, AWS_DEFAULT_REGION, the profile), if any."""
    try:
        region = _session(profile).get_config_variable("region")
    except botocore.exceptions.BotoCoreError:
        return None
    return str(region) if region else None


class CredentialSource:
    """AWS credentials from botocore's chain, optionally for a named profile.

    ``credentials`` may be given directly (tests, or a caller that resolved them already).
    """

    def __init__(
        self,
        profile: str | None = None,
        *,
        credentials: botocore.credentials.Credentials | None = None,
    ) -> None:
        self.profile = profile
        if credentials is None:
            credentials = self._resolve(profile)
        self._credentials = credentials

    @classmethod
    def static(cls, access_key: str, secret_key: str, token: str | None = None) -> CredentialSource:
        """Fixed credentials, e.g. for a local store."""
        return cls(credentials=botocore.credentials.Credentials(access_key, secret_key, token))

    @staticmethod
    def _resolve(profile: str | None) -> botocore.credentials.Credentials:
        where = f"profile {profile!r}" if profile else "the default chain"
        try:
            found = _session(profile).get_credentials()
        except botocore.exceptions.ProfileNotFound:
            raise CredentialsError(f"AWS profile {profile!r} was not found") from None
        except botocore.exceptions.BotoCoreError as exc:
            raise CredentialsError(f"AWS credentials from {where} failed: {type(exc).__name__}") from None
        if found is None:
            raise CredentialsError(
                "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                "or use --profile, SSO or an instance role"
            )
        return found

    def frozen(self) -> botocore.credentials.ReadOnlyCredentials:
        """A consistent snapshot; botocore refreshes refreshable credentials here when they near expiry."""
        try:
            snapshot = self._credentials.get_frozen_credentials()
        except botocore.exceptions.BotoCoreError as exc:
            raise CredentialsError(f"refreshing AWS credentials failed: {type(exc).__name__}") from None
        if not snapshot.access_key or not snapshot.secret_key:
            raise CredentialsError("the AWS credentials found are incomplete (no access key or secret key)")
        return snapshot

    @property
    def access_key(self) -> str:
        """The access key id (not a secret; it names the key in every Authorization header)."""
        return str(self.frozen().access_key)

    def __repr__(self) -> str:
        profile = f"profile={self.profile!r}, " if self.profile else ""
        method = getattr(self._credentials, "method", None) or "explicit"
        return f"CredentialSource({profile}method={method!r})"

    __str__ = __repr__


class Signer:
    """Signs requests with SigV4 for service ``omics`` in one region."""

    def __init__(self, credentials: CredentialSource, region: str) -> None:
        self.credentials = credentials
        self.region = region
        self._auth: botocore.auth.SigV4Auth | None = None
        self._auth_for: botocore.credentials.ReadOnlyCredentials | None = None

    def _signer_for(self, snapshot: botocore.credentials.ReadOnlyCredentials) -> botocore.auth.SigV4Auth:
        # SigV4Auth holds no per-request state, so one is kept until the credentials change.
        if self._auth is None or self._auth_for != snapshot:
            self._auth = botocore.auth.SigV4Auth(snapshot, SERVICE_NAME, self.region)
            self._auth_for = snapshot
        return self._auth

    def sign(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes = b"",
        unsigned_payload: bool = False,
    ) -> dict[str, str]:
        """The headers to send: ``headers`` plus Authorization, X-Amz-Date and X-Amz-Security-Token if any.

        ``url`` must be exactly the URL sent (percent-encoded path and query). With ``unsigned_payload`` the
        body is not hashed: X-Amz-Content-SHA256 is UNSIGNED-PAYLOAD, as parts are sent. Otherwise ``body``
        is hashed into the signature.
        """
        auth = self._signer_for(self.credentials.frozen())
        request = botocore.awsrequest.AWSRequest(method=method, url=url, headers=dict(headers), data=body)
        if unsigned_payload:
            request.headers[_CONTENT_SHA256] = UNSIGNED_PAYLOAD
        auth.add_auth(request)
        return dict(request.headers.items())

    def __repr__(self) -> str:
        return f"Signer(service={SERVICE_NAME!r}, region={self.region!r}, credentials={self.credentials!r})"

    __str__ = __repr__
