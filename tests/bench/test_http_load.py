"""The benchmarks' lean HTTP client against a real aiohttp server on loopback."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from bench.http_load import Client, ProtocolError


@pytest.fixture
async def server() -> AsyncIterator[tuple[int, list[dict[str, str]]]]:
    received: list[dict[str, str]] = []

    async def messages(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        peer = request.transport.get_extra_info("peername")[1] if request.transport else 0
        received.append({**body, "key": request.headers.get("Idempotency-Key", ""), "peer": peer})
        if body.get("close"):
            return web.json_response({"ok": True}, status=201, headers={"Connection": "close"})
        if body.get("chunked"):
            response = web.StreamResponse(status=200)
            response.enable_chunked_encoding()
            await response.prepare(request)
            await response.write(b"{}")
            await response.write_eof()
            return response
        return web.json_response({"ok": True, "n": len(received)}, status=int(body["status"]))

    app = web.Application()
    app.router.add_post("/api/v1/messages", messages)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield port, received
    await runner.cleanup()


async def test_posts_over_one_kept_alive_connection(server: tuple[int, list]) -> None:
    port, received = server
    client = Client("127.0.0.1", port)
    statuses = [
        await client.post(
            "/api/v1/messages", json.dumps({"status": s}).encode(), {"Idempotency-Key": f"k{i}"}
        )
        for i, s in enumerate([201, 200, 422, 201])
    ]
    client.close()
    assert statuses == [201, 200, 422, 201]
    assert [r["key"] for r in received] == ["k0", "k1", "k2", "k3"]
    assert len({r["peer"] for r in received}) == 1  # one connection served all four


async def test_reconnects_after_the_server_closes(server: tuple[int, list]) -> None:
    port, received = server
    client = Client("127.0.0.1", port)
    first = await client.post("/api/v1/messages", b'{"close": true}', {})
    second = await client.post("/api/v1/messages", b'{"status": 201}', {})
    client.close()
    assert (first, second) == (201, 201)
    assert received[0]["peer"] != received[1]["peer"]  # a new connection, as the server asked


async def test_a_chunked_answer_is_an_error_not_a_hang(server: tuple[int, list]) -> None:
    port, _ = server
    client = Client("127.0.0.1", port)
    with pytest.raises(ProtocolError, match="chunked"):
        await client.post("/api/v1/messages", b'{"chunked": true}', {})
    assert await client.post("/api/v1/messages", b'{"status": 202}', {}) == 202  # usable again
    client.close()
