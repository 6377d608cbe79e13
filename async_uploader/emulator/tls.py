"""HTTPS for the store: a certificate given as PEM files, or one for the loopback names made at start.

A made certificate is signed by a CA that exists only for this run of the store (made with trustme, which
makes test CAs with the cryptography library); its PEM is written next to the store's data so clients can
trust it (``AWS_CA_BUNDLE``, ``--ca-bundle``, ``NODE_EXTRA_CA_CERTS``, or :func:`client_context`).
"""

from __future__ import annotations

import ssl
from pathlib import Path

LOOPBACK_NAMES = ("127.0.0.1", "::1", "localhost")
CA_FILE = "tls-ca.pem"


def server_context(cert: Path | None, key: Path | None, directory: Path) -> tuple[ssl.SSLContext, Path | None]:
    """The server's TLS context and the CA file written for it (None when the certificate was given).

    Raises ValueError with a one-line reason when the files cannot be used.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    if cert is not None and key is not None:
        try:
            context.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"cannot use --tls-cert {cert} with --tls-key {key}: {exc}") from None
        return context, None
    try:  # the tls extra is optional: only a store that makes its own certificate needs it
        import trustme  # noqa: PLC0415
    except ImportError:
        raise ValueError("serving TLS with a made certificate needs trustme: pip install trustme") from None
    authority = trustme.CA(organization_name="async_uploader local store")
    authority.issue_cert(*LOOPBACK_NAMES).configure_cert(context)
    directory.mkdir(parents=True, exist_ok=True)
    ca_path = directory / CA_FILE
    authority.cert_pem.write_to_path(str(ca_path))
    return context, ca_path


def client_context(ca_path: Path) -> ssl.SSLContext:
    """A client context that trusts the store's CA (and checks the host name as usual)."""
    return ssl.create_default_context(cafile=str(ca_path))
