"""A local HealthOmics sequence store speaking the multipart read-set upload API.

It verifies SigV4 signatures, validates requests as the service does, keeps uploaded parts on disk (or
only counts them with ``discard``), and injects throttles, errors, resets, latency and quota limits on
request. It imports nothing from the client side of the package: it is an independent oracle.
"""

from .errors import ApiError
from .faults import FaultOptions
from .options import StoreOptions
from .server import LocalStore

__all__ = ["ApiError", "FaultOptions", "LocalStore", "StoreOptions"]
