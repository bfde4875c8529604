"""A routed request's answer, written in one step: the per-request share of aiohttp's response machinery.

``web.Response`` reaches the socket through ``prepare`` (header preparation), the payload writer's header
buffer and ``write_eof`` (body, then one ``write``): about 7 µs of Python per answer in
``bench/server_floor.py``'s shape, paid by every routed request. :class:`Answer` is a ``web.Response`` in
every other respect (the middleware, the audit and the tests read it as one), whose ``prepare`` builds the
same head with the same rules and writes head and body in one ``transport.write`` (then waits, as aiohttp does,
while the client is not reading). Anything outside the plain case (an answer that must have no body, such as to
HEAD or with 204 or 304; cookies, compression, chunking) takes aiohttp's own path. docs/architecture.md, "Cost of
a routed request", has the measurement.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import hdrs, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.compression_utils import MAX_SYNC_CHUNK_SIZE
from aiohttp.helpers import must_be_empty_body, rfc822_formatted_time
from aiohttp.http import SERVER_SOFTWARE, HttpVersion10, HttpVersion11
from aiohttp.http_writer import _serialize_headers  # aiohttp's C serializer: it refuses CR/LF in a header
from multidict import CIMultiDict


class Answer(web.Response):
    __slots__ = ()

    def __init__(self, *, body: bytes, status: int = 200, content_type: str = "application/json",
                 headers: Mapping[str, str] | None = None) -> None:
        """``web.Response(body=..., status=..., content_type=..., headers=...)``: the same state, set directly for
        a bytes body and a content type the headers do not carry already (any other case is aiohttp's own
        constructor; a test compares the two objects' state). aiohttp's goes through its keyword checks and two
        constructors: with six headers about 18,700 instructions per answer against 15,000, most of either being
        the headers' CIMultiDict."""
        real = CIMultiDict(headers) if headers else CIMultiDict()
        if type(body) is not bytes or hdrs.CONTENT_TYPE in real or "charset" in content_type:
            super().__init__(body=body, status=status, content_type=content_type, headers=headers)
            return
        real[hdrs.CONTENT_TYPE] = content_type
        self._state = {}
        self._headers = real
        self._set_status(status, None)
        self._body = body
        self._compressed_body = None
        self._zlib_executor_size = MAX_SYNC_CHUNK_SIZE
        self._zlib_executor = None

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        body = self._body
        if (self._eof_sent or self._payload_writer is not None or type(body) is not bytes or self._cookies
                or self._compression or self._chunked or must_be_empty_body(request.method, self._status)):
            return await super().prepare(request)
        transport = request.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("Cannot write to closing transport")
        await request._prepare_hook(self)  # the application's on_response_prepare signals, as aiohttp runs them
        keep_alive = self._keep_alive
        if keep_alive is None:
            keep_alive = self._keep_alive = request.keep_alive
        headers = self._headers
        if hdrs.CONTENT_LENGTH not in headers:
            headers[hdrs.CONTENT_LENGTH] = str(len(body))
        if hdrs.DATE not in headers:
            headers[hdrs.DATE] = rfc822_formatted_time()
        if body:
            headers.setdefault(hdrs.CONTENT_TYPE, "application/octet-stream")
        headers.setdefault(hdrs.SERVER, SERVER_SOFTWARE)
        version = request.version
        if hdrs.CONNECTION not in headers:
            if keep_alive:
                if version == HttpVersion10:
                    headers[hdrs.CONNECTION] = "keep-alive"
            elif version == HttpVersion11:
                headers[hdrs.CONNECTION] = "close"
        head = _serialize_headers(f"HTTP/{version[0]}.{version[1]} {self._status} {self._reason}", headers)
        transport.write(head + body)
        self._eof_sent = True
        self._body_length = len(body)
        await request._payload_writer.drain()  # a client that does not read holds the next request back
        return None
