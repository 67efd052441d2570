"""The REST API over real HTTP on a loopback port."""

from __future__ import annotations

import asyncio

import aiohttp

from tests.conftest import Server


async def submit(http: aiohttp.ClientSession, server: Server, key: str | None = None,
                 **fields: str) -> aiohttp.ClientResponse:
    body = {"name": "Ann Lee", "email": "ann@example.org", "subject": "Printer on fire",
            "body": "Smoke is coming out of the printer.", **fields}
    headers = {"Idempotency-Key": key} if key else {}
    return await http.post(f"{server.base_url}/api/v1/messages", json=body, headers=headers)


async def test_intake_opens_a_ticket_with_a_status_link(server: Server, http) -> None:
    response = await submit(http, server)
    assert response.status == 201
    ticket = (await response.json())["ticket"]
    assert ticket["number"] == 1
    assert ticket["status_url"].startswith(f"{server.base_url}/t/1/")
    token = ticket["status_url"].rsplit("/", 1)[1]
    assert len(token) * 6 >= 128  # base64url characters carry 6 bits each


async def test_same_idempotency_key_returns_the_same_ticket(server: Server, http) -> None:
    first = await submit(http, server, key="order-42")
    again = await submit(http, server, key="order-42")
    other = await submit(http, server, key="order-43")
    assert (first.status, again.status, other.status) == (201, 200, 201)
    assert (await first.json())["ticket"] == (await again.json())["ticket"]
    assert (await other.json())["ticket"]["number"] == 2


async def test_concurrent_retries_of_one_key_create_one_ticket(server: Server, http) -> None:
    responses = await asyncio.gather(*(submit(http, server, key="dup") for _ in range(20)))
    numbers = {(await r.json())["ticket"]["number"] for r in responses}
    assert numbers == {1}
    assert sorted(r.status for r in responses) == [200] * 19 + [201]
