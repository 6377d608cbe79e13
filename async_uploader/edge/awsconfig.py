"""The AWS configuration users already have, read through botocore's own resolution (never a parser of ours).

``aws_settings(profile)`` asks a botocore session what a botocore ``omics`` client would use:

* the endpoint: ``AWS_ENDPOINT_URL_OMICS``, then ``AWS_ENDPOINT_URL``, then the ``omics`` entry of the profile's
  ``services`` section, then the profile's ``endpoint_url`` (botocore's ``ConfiguredEndpointProvider``, >= 1.31),
  all ignored with ``AWS_IGNORE_CONFIGURED_ENDPOINT_URLS`` / ``ignore_configured_endpoint_urls = true``;
* the region (``AWS_DEFAULT_REGION``, the profile's ``region``), ``AWS_CA_BUNDLE`` or the profile's
  ``ca_bundle``, ``AWS_MAX_ATTEMPTS`` or ``max_attempts``, ``AWS_RETRY_MODE`` or ``retry_mode``;
* the profile's proxy settings botocore defines (``proxy_ca_bundle``, ``proxy_use_forwarding_for_https``,
  directly in the profile or in a nested ``proxies_config``). Proxy URLs themselves come from the environment
  only, as botocore takes them (``core.proxy``).

``resolve_service`` fills what a ``ServiceConfig`` leaves unset from these; an explicit value always wins.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import botocore.configprovider
import botocore.exceptions

from ..core.config import ServiceConfig, env_region
from ..core.errors import ConfigError
from .signing import botocore_session

if TYPE_CHECKING:
    import botocore.session

__all__ = ["AwsSettings", "aws_settings", "resolve_service"]

_SERVICE = "omics"


@dataclass(frozen=True)
class AwsSettings:
    """What botocore's configuration says for an omics client; None where it says nothing."""

    region: str | None = None
    endpoint_url: str | None = None
    endpoint_from: str | None = None
    """Where ``endpoint_url`` came from, for messages (a variable's name, or the profile's setting)."""
    ca_bundle: str | None = None
    max_attempts: int | None = None
    retry_mode: str | None = None
    proxy_ca_bundle: str | None = None
    proxy_use_forwarding_for_https: bool = False


def _variable(session: Any, name: str) -> Any:
    try:
        return session.get_config_variable(name)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"the AWS setting {name} is invalid: {exc}") from None


def _endpoint(session: Any) -> tuple[str | None, str | None]:
    if _variable(session, "ignore_configured_endpoint_urls"):
        return None, None
    provider = botocore.configprovider.ConfiguredEndpointProvider(
        full_config=session.full_config, scoped_config=session.get_scoped_config(), client_name=_SERVICE
    )
    try:
        url = provider.provide()
    except botocore.exceptions.BotoCoreError as exc:
        raise ConfigError(f"AWS configuration: {exc}") from None
    if not url:
        return None, None
    for name in ("AWS_ENDPOINT_URL_OMICS", "AWS_ENDPOINT_URL"):
        if os.environ.get(name) == url:
            return str(url), name
    scoped = session.get_scoped_config()
    where = "the profile's endpoint_url" if scoped.get("endpoint_url") == url else "the profile's services section"
    return str(url), where


def aws_settings(profile: str | None = None, session: botocore.session.Session | None = None) -> AwsSettings:
    """Read botocore's configuration for ``profile`` (default AWS_PROFILE), through ``session`` when given (a
    botocore session of that profile). Bad settings are one-line errors."""
    session = session or botocore_session(profile)
    endpoint, where = _endpoint(session)
    proxies = _variable(session, "proxies_config") or {}
    attempts = _variable(session, "max_attempts")
    mode = _variable(session, "retry_mode")
    region = _variable(session, "region")
    ca_bundle = _variable(session, "ca_bundle")
    return AwsSettings(
        region=str(region) if region else None,
        endpoint_url=endpoint,
        endpoint_from=where,
        ca_bundle=str(ca_bundle) if ca_bundle else None,
        max_attempts=int(attempts) if attempts is not None else None,
        # botocore reports its own default ("legacy") when nothing is set: only an explicit mode counts here.
        retry_mode=str(mode) if mode and _mode_is_set(session) else None,
        proxy_ca_bundle=proxies.get("proxy_ca_bundle"),
        proxy_use_forwarding_for_https=bool(proxies.get("proxy_use_forwarding_for_https")),
    )


def _mode_is_set(session: Any) -> bool:
    return bool(os.environ.get("AWS_RETRY_MODE") or session.get_scoped_config().get("retry_mode"))


def resolve_service(service: ServiceConfig, session: botocore.session.Session | None = None) -> ServiceConfig:
    """``service`` with its unset endpoint, region and CA bundle taken from botocore's configuration (read through
    ``session`` when given, a botocore session of ``service.profile``).

    An endpoint from the configuration is a custom endpoint like ``endpoint_url`` (no host prefixes).
    """
    settings = aws_settings(service.profile, session)
    endpoint = service.endpoint_url or settings.endpoint_url
    try:
        return replace(
            service,
            endpoint_url=endpoint,
            region=service.region or env_region() or settings.region,
            ca_bundle=service.ca_bundle or settings.ca_bundle,
            proxy_ca_bundle=service.proxy_ca_bundle or settings.proxy_ca_bundle,
        )
    except ConfigError as exc:
        if service.endpoint_url is None and settings.endpoint_from:
            raise ConfigError(f"{exc} (from {settings.endpoint_from})") from None
        raise
