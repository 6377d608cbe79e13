"""SigV4 signing: the one place botocore's signer and credential chain are called.

``CredentialSource`` resolves credentials through botocore's usual chain (environment, shared files and
profiles, ``credential_process``, SSO, container and instance roles). Requests never wait for a refresh on the
event loop: ``fresh()`` hands out the last snapshot, and when botocore would refresh (within 15 minutes of
expiry) one refresh is started in a worker thread, shared by every request, while requests go on signing with the
snapshot they have. Only a snapshot within a minute of expiry (or none yet) makes requests wait, all for that
one refresh. ``Signer.sign`` signs one request with ``botocore.auth.SigV4Auth`` for service ``omics``, at this
machine's time plus ``clock_offset`` (set when the service says the clock is off: README "Clock skew"). No secret
ever reaches a repr, a log line or an exception message.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Mapping

import anyio
import botocore.auth
import botocore.awsrequest
import botocore.credentials
import botocore.exceptions
import botocore.session

from ..core.errors import CredentialsError

__all__ = [
    "ADVISORY_REFRESH",
    "MANDATORY_REFRESH",
    "SERVICE_NAME",
    "UNSIGNED_PAYLOAD",
    "CredentialSource",
    "Signer",
    "botocore_session",
    "session_region",
]

SERVICE_NAME = "omics"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
_CONTENT_SHA256 = "X-Amz-Content-SHA256"
ADVISORY_REFRESH = 15 * 60.0
"""Seconds before expiry from which a refresh is started in the background (botocore's advisory window)."""
MANDATORY_REFRESH = 60.0
"""Seconds before expiry from which a snapshot is no longer used: requests wait for the refresh."""
REFRESH_SPACING = 5.0
"""Seconds between background refreshes while the credentials handed out stay close to expiry."""

log = logging.getLogger("async_uploader")


def _profile_not_found(exc: botocore.exceptions.ProfileNotFound) -> CredentialsError:
    name = exc.kwargs.get("profile")
    return CredentialsError(f"AWS profile {name!r} was not found (AWS_PROFILE, --profile, AWS_CONFIG_FILE)")


def botocore_session(profile: str | None = None) -> botocore.session.Session:
    """A botocore session for ``profile`` (default: AWS_PROFILE), its configuration checked once."""
    try:
        session = botocore.session.Session(profile=profile)
        session.get_scoped_config()
    except botocore.exceptions.ProfileNotFound as exc:
        raise _profile_not_found(exc) from None
    except botocore.exceptions.BotoCoreError as exc:
        raise CredentialsError(f"cannot load AWS configuration: {type(exc).__name__}: {exc}") from None
    return session


def session_region(profile: str | None = None) -> str | None:
    """The region botocore's configuration names (AWS_REGION, AWS_DEFAULT_REGION, the profile), if any."""
    try:
        region = botocore_session(profile).get_config_variable("region")
    except (botocore.exceptions.BotoCoreError, CredentialsError):
        return None
    return str(region) if region else None


def _as_resolved(
    credentials: botocore.credentials.Credentials,
) -> botocore.credentials.ReadOnlyCredentials | None:
    """The values refreshable credentials were resolved with, without asking botocore for them.

    Asking (``get_frozen_credentials``) refreshes at once when they are within 15 minutes of expiry, running a
    credential_process a second time right after the chain ran it; the snapshot botocore keeps is read instead.
    None for deferred credentials (assume-role, SSO) not fetched yet.
    """
    held = getattr(credentials, "_frozen_credentials", None)
    if isinstance(held, botocore.credentials.ReadOnlyCredentials) and held.access_key and held.secret_key:
        return held
    return None


def _utc_now() -> datetime.datetime:
    """Now in UTC from botocore's own clock where it has one (botocore >= 1.35), so signing times agree."""
    current = getattr(botocore.auth, "get_current_datetime", None)
    if current is not None:
        return current()  # type: ignore[no-any-return]
    return datetime.datetime.now(datetime.UTC).replace(tzinfo=None)


class CredentialSource:
    """AWS credentials from botocore's chain, optionally for a named profile.

    ``credentials`` may be given directly (tests, or a caller that resolved them already); ``session``, a botocore
    session of ``profile`` to resolve the chain with (one made here otherwise). Resolving the chain may run a
    ``credential_process`` or call a metadata service: ``await CredentialSource.resolve(profile)`` does it in a
    worker thread.
    """

    def __init__(
        self,
        profile: str | None = None,
        *,
        credentials: botocore.credentials.Credentials | None = None,
        session: botocore.session.Session | None = None,
    ) -> None:
        self.profile = profile
        if credentials is None:
            credentials = self._resolve(profile, session)
        self._credentials = credentials
        self._refreshable = isinstance(credentials, botocore.credentials.RefreshableCredentials)
        self._snapshot = _as_resolved(credentials) if self._refreshable else None
        self._task: asyncio.Task[None] | None = None
        self._error: CredentialsError | None = None
        self._not_before = 0.0
        self.refreshes = 0
        """Background refreshes finished (a statistic for tests and logs)."""
        if not self._refreshable:
            self.frozen()

    @classmethod
    def resolved(cls, profile: str | None = None, session: botocore.session.Session | None = None) -> CredentialSource:
        """The chain resolved and deferred credentials fetched, now: this may block (``resolve`` runs it in a worker
        thread)."""
        source = cls(profile, session=session)
        if source._snapshot is None:
            source.frozen()
        return source

    @classmethod
    async def resolve(cls, profile: str | None = None) -> CredentialSource:
        """Resolve the chain (and fetch deferred credentials) in a worker thread: a slow provider never stalls
        the event loop."""
        return await anyio.to_thread.run_sync(cls.resolved, profile, abandon_on_cancel=True)

    @classmethod
    def static(cls, access_key: str, secret_key: str, token: str | None = None) -> CredentialSource:
        """Fixed credentials, e.g. for a local store."""
        return cls(credentials=botocore.credentials.Credentials(access_key, secret_key, token))

    @staticmethod
    def _resolve(profile: str | None, session: botocore.session.Session | None) -> botocore.credentials.Credentials:
        where = f"profile {profile!r}" if profile else "the default chain"
        try:
            found = (session or botocore_session(profile)).get_credentials()
        except botocore.exceptions.ProfileNotFound as exc:
            raise _profile_not_found(exc) from None
        except botocore.exceptions.BotoCoreError as exc:
            raise CredentialsError(f"AWS credentials from {where} failed: {type(exc).__name__}") from None
        if found is None:
            raise CredentialsError(
                "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                "or use --profile, SSO or an instance role"
            )
        return found

    def frozen(self) -> botocore.credentials.ReadOnlyCredentials:
        """A consistent snapshot; botocore refreshes refreshable credentials here when they near expiry.

        This may block (a refresh runs the provider): on the event loop use ``fresh()``.
        """
        try:
            snapshot = self._credentials.get_frozen_credentials()
        except (botocore.exceptions.BotoCoreError, RuntimeError) as exc:
            raise CredentialsError(f"refreshing AWS credentials failed: {type(exc).__name__}") from None
        if not snapshot.access_key or not snapshot.secret_key:
            raise CredentialsError("the AWS credentials found are incomplete (no access key or secret key)")
        self._snapshot = snapshot
        return snapshot

    async def fresh(self) -> botocore.credentials.ReadOnlyCredentials:
        """A snapshot good for at least a minute, without blocking the event loop.

        Near expiry one refresh runs in a worker thread, shared by every caller; callers wait for it only when
        the snapshot they would get is within ``MANDATORY_REFRESH`` seconds of expiry (or there is none yet).
        """
        snapshot = self._snapshot
        if not self._refreshable and snapshot is not None:
            return snapshot
        if snapshot is None or self._expires_within(MANDATORY_REFRESH):
            return await self._wait_for_refresh()
        if self._task is None and time.monotonic() >= self._not_before and self._expires_within(ADVISORY_REFRESH):
            self._start_refresh()
        return snapshot

    def _expires_within(self, seconds: float) -> bool:
        credentials = self._credentials
        if not isinstance(credentials, botocore.credentials.RefreshableCredentials):
            return False
        return bool(credentials.refresh_needed(int(seconds)))

    def _start_refresh(self) -> asyncio.Task[None]:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._refresh())
        return self._task

    async def _refresh(self) -> None:
        try:
            await anyio.to_thread.run_sync(self.frozen, abandon_on_cancel=True)
        except CredentialsError as exc:
            self._error = exc
            log.warning("%s; will try again", exc)
        else:
            self._error = None
            self.refreshes += 1
        finally:
            self._task = None
            self._not_before = time.monotonic() + REFRESH_SPACING

    async def _wait_for_refresh(self) -> botocore.credentials.ReadOnlyCredentials:
        await asyncio.shield(self._start_refresh())
        snapshot = self._snapshot
        if snapshot is None or (self._error is not None and self._expires_within(0)):
            raise self._error or CredentialsError("no AWS credentials could be obtained")
        return snapshot

    async def aclose(self) -> None:
        """Stop a background refresh still running (its worker thread is abandoned, not waited for)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    @property
    def access_key(self) -> str:
        """The access key id (not a secret; it names the key in every Authorization header)."""
        return str((self._snapshot or self.frozen()).access_key)

    def __repr__(self) -> str:
        profile = f"profile={self.profile!r}, " if self.profile else ""
        method = getattr(self._credentials, "method", None) or "explicit"
        return f"CredentialSource({profile}method={method!r})"

    __str__ = __repr__


class Signer:
    """Signs requests with SigV4 for service ``omics`` in one region.

    ``clock_offset`` (seconds) is added to this machine's clock for the signing time: the measured difference
    to the service's clock once the service has refused a signature as expired (``edge.client``).
    """

    def __init__(self, credentials: CredentialSource, region: str) -> None:
        self.credentials = credentials
        self.region = region
        self.clock_offset = 0.0
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
        *,
        credentials: botocore.credentials.ReadOnlyCredentials | None = None,
    ) -> dict[str, str]:
        """The headers to send: ``headers`` plus Authorization, X-Amz-Date and X-Amz-Security-Token if any.

        ``url`` must be exactly the URL sent (percent-encoded path and query). With ``unsigned_payload`` the
        body is not hashed: X-Amz-Content-SHA256 is UNSIGNED-PAYLOAD, as parts are sent. Otherwise ``body``
        is hashed into the signature. ``credentials`` is a snapshot from ``CredentialSource.fresh()``; without
        it the source is asked synchronously.
        """
        snapshot = credentials if credentials is not None else self.credentials.frozen()
        auth = self._signer_for(snapshot)
        request = botocore.awsrequest.AWSRequest(method=method, url=url, headers=dict(headers), data=body)
        now = _utc_now() + datetime.timedelta(seconds=self.clock_offset)
        stamp = now.strftime(botocore.auth.SIGV4_TIMESTAMP)
        request.context["timestamp"] = stamp
        request.headers["X-Amz-Date"] = stamp
        if snapshot.token:
            request.headers["X-Amz-Security-Token"] = snapshot.token
        if unsigned_payload:
            request.headers[_CONTENT_SHA256] = UNSIGNED_PAYLOAD
        canonical = auth.canonical_request(request)
        signature = auth.signature(auth.string_to_sign(request, canonical), request)
        signed = auth.signed_headers(auth.headers_to_sign(request))
        request.headers["Authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={auth.scope(request)}, SignedHeaders={signed}, Signature={signature}"
        )
        return dict(request.headers.items())

    def __repr__(self) -> str:
        return f"Signer(service={SERVICE_NAME!r}, region={self.region!r}, credentials={self.credentials!r})"

    __str__ = __repr__
