"""A local HealthOmics sequence store speaking the multipart read-set upload API.

It verifies SigV4 signatures, validates requests as the service does, keeps uploaded parts on disk (or
only counts them with ``discard``), and injects throttles, errors, resets, latency and quota limits on
request. It imports nothing from the client side of the package: it is an independent oracle.

The server (aiohttp's web side) is imported on first use of ``LocalStore``, so reading the store's command-line
options (``async-uploader serve --help``) does not load it.
"""

from __future__ import annotations

import importlib
import typing

from .errors import ApiError
from .faults import FaultOptions
from .options import StoreOptions

if typing.TYPE_CHECKING:
    from .server import LocalStore

__all__ = ["ApiError", "FaultOptions", "LocalStore", "StoreOptions"]


def __getattr__(name: str) -> typing.Any:
    if name != "LocalStore":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = importlib.import_module(".server", __name__).LocalStore
    globals()[name] = value
    return value
