"""The CONNECT tunnel through an ``http://`` proxy, for an ``https://`` target of the sockets of ``edge.pool``.

The proxy is chosen by ``core.proxy`` (its Proxy-Authorization comes from the proxy URL). A 2xx answer opens the
tunnel; any other is ``ProxyAnswer``, which the pool turns into the transport's error (``edge.messages``).
"""

from __future__ import annotations

import socket

import h11
from yarl import URL

from ..core.proxy import Proxy
from .http11 import Closed, Connection, Key

__all__ = ["ProxyAnswer", "tunnel"]


class ProxyAnswer(Exception):
    """The proxy answered CONNECT with something other than 2xx."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}".rstrip())
        self.status = status
        self.reason = reason


async def tunnel(sock: socket.socket, url: URL, proxy: Proxy, read_timeout: float) -> None:
    """CONNECT through ``proxy`` to the host of ``url`` over the plain socket ``sock``."""
    host = (url.host or "").lower()
    authority = f"[{host}]:{url.port}" if ":" in host else f"{host}:{url.port}"
    connection = Connection(sock, Key("http", "", 0, proxy.url), read_timeout)
    headers = [("Host", authority), *proxy.headers().items()]
    await connection.write(
        connection.http.send(h11.Request(method="CONNECT", target=authority, headers=headers)) or b""
    )
    connection.http.send(h11.EndOfMessage())
    while True:
        event = connection.http.next_event()
        if event is h11.NEED_DATA:
            data = await connection.receive()
            if not data:
                raise Closed("the proxy closed the connection", answered=False)
            connection.http.receive_data(data)
        elif isinstance(event, h11.Response):
            if 200 <= event.status_code < 300:
                return
            raise ProxyAnswer(event.status_code, event.reason.decode("latin-1"))
