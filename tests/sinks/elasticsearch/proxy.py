"""A TCP proxy in front of the real Elasticsearch that a test can cut and restore: cutting
closes the listening socket and every open connection (clients then get "connection
refused"), restoring listens again on the same port."""

from __future__ import annotations

import socket
from typing import Any

import anyio
from anyio.abc import SocketStream, TaskGroup


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TcpProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = free_port()
        self.connections = 0
        self._scope: anyio.CancelScope | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, group: TaskGroup) -> None:
        """Listen (again) on the proxy's port; returns once it accepts connections."""
        await group.start(self._serve)

    def cut(self) -> None:
        """Stop listening and drop every connection at once."""
        if self._scope is not None:
            self._scope.cancel()
            self._scope = None

    async def _serve(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        with anyio.CancelScope() as scope:
            self._scope = scope
            listener = await anyio.create_tcp_listener(
                local_host="127.0.0.1", local_port=self.port, reuse_port=False
            )
            async with listener, anyio.create_task_group() as group:
                task_status.started()
                await listener.serve(self._pipe, group)

    async def _pipe(self, client: SocketStream) -> None:
        self.connections += 1
        async with client:
            try:
                upstream = await anyio.connect_tcp(*self.upstream)
            except OSError:
                return
            async with upstream, anyio.create_task_group() as group:
                group.start_soon(self._copy, client, upstream, group)
                group.start_soon(self._copy, upstream, client, group)

    @staticmethod
    async def _copy(source: SocketStream, sink: SocketStream, group: TaskGroup) -> None:
        try:
            async for chunk in source:
                await sink.send(chunk)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass
        group.cancel_scope.cancel()
