"""The in-memory transport fails the way the real ones do, so unit tests see production's errors."""

from __future__ import annotations

import pytest

from swarm.testing import run_virtual
from swarm.transport import PeerUnreachable
from swarm.transports.memory import MemoryHub, MemoryTransport


@pytest.mark.parametrize("error", [PermissionError("banned"), ValueError("bad frame"), RuntimeError("bug")])
def test_a_handler_that_raises_surfaces_as_peer_unreachable(error: Exception) -> None:
    async def scenario() -> None:
        hub = MemoryHub(latency=0.01)
        server, client = MemoryTransport(hub, "server"), MemoryTransport(hub, "client")
        await server.start()
        await client.start()

        async def refuse(caller: str, data: bytes) -> bytes:
            raise error

        async def echo(caller: str, data: bytes) -> bytes:
            return data

        await server.set_request_handler("/refuse", refuse)
        await server.set_request_handler("/echo", echo)
        with pytest.raises(PeerUnreachable, match="server refused /refuse") as info:
            await client.request("server", "/refuse", b"x", timeout=1.0)
        assert info.value.__cause__ is error
        assert await client.request("server", "/echo", b"x", timeout=1.0) == b"x"  # the link still works

    run_virtual(scenario)
