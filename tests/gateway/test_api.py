"""The REST API over real HTTP on a loopback port."""

from __future__ import annotations

import asyncio

import aiohttp

from core.messages import Channel, InboundMessage, Sender
from tests.conftest import Server


async def submit(
    http: aiohttp.ClientSession, server: Server, key: str | None = None, **fields: str
) -> aiohttp.ClientResponse:
    body = {
        "name": "Ann Lee",
        "email": "ann@example.org",
        "subject": "Printer on fire",
        "body": "Smoke is coming out of the printer.",
        **fields,
    }
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


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_bad_input_is_named(server: Server, http) -> None:
    url = f"{server.base_url}/api/v1/messages"
    cases = [
        (
            await http.post(url, data=b"{not json", headers={"Content-Type": "application/json"}),
            400,
            "body",
        ),
        (await http.post(url, json=[1, 2]), 400, "body"),
        (await http.post(url, json={"email": "ann@example.org"}), 400, "body"),
        (await http.post(url, json={"email": "nope", "body": "x"}), 400, "email"),
        (await http.post(url, json={"email": "a@b.org", "body": 5}), 400, "body"),
        (
            await http.post(url, json={"email": "a@b.org", "body": "x", "subject": "s" * 301}),
            400,
            "subject",
        ),
    ]
    for response, status, field in cases:
        problem = await response.json(content_type=None)
        assert (response.status, problem["field"]) == (status, field), problem
        assert response.content_type == "application/problem+json"


async def test_oversized_body_is_413(server_factory, http) -> None:
    server = await server_factory(intake={"max_request_bytes": 2048})
    response = await http.post(
        f"{server.base_url}/api/v1/messages", json={"email": "a@b.org", "body": "x" * 5000}
    )
    assert response.status == 413
    assert (await response.json(content_type=None))["status"] == 413


async def test_tokens_and_roles(server: Server, http) -> None:
    url = f"{server.base_url}/api/v1/tickets"
    assert (await http.get(url)).status == 401
    assert (await http.get(url, headers=auth("hl_wrong"))).status == 401
    agent, _ = await server.token("agent")
    assert (await http.get(url, headers=auth(agent))).status == 200
    assert (await http.get(f"{server.base_url}/api/v1/outbox", headers=auth(agent))).status == 403
    supervisor, _ = await server.token("supervisor")
    assert (
        await http.get(f"{server.base_url}/api/v1/outbox", headers=auth(supervisor))
    ).status == 200


async def test_agent_workflow_over_http(server: Server, http) -> None:
    await submit(http, server, subject="Invoice has wrong VAT", body="We were charged 19%.")
    await submit(http, server, email="bo@example.org", subject="Login", body="Cannot log in")
    alice, alice_id = await server.token("agent", name="Alice")
    bob, _ = await server.token("agent", name="Bob")
    base = f"{server.base_url}/api/v1/tickets"

    listing = await (await http.get(f"{base}?q=vat", headers=auth(alice))).json()
    assert [t["number"] for t in listing["tickets"]] == [1] and listing["total"] == 1

    claimed = await http.post(f"{base}/1/claim", headers=auth(alice))
    assert claimed.status == 200
    lost = await http.post(f"{base}/1/claim", headers=auth(bob))
    assert lost.status == 409
    assert "already claimed by Alice" in (await lost.json(content_type=None))["detail"]

    reply = await http.post(
        f"{base}/1/replies", json={"text": "Corrected, sorry!"}, headers=auth(alice)
    )
    assert reply.status == 201
    note = await http.post(f"{base}/1/notes", json={"text": "VAT bug again"}, headers=auth(alice))
    assert note.status == 201
    patched = await http.patch(
        f"{base}/1",
        json={"status": "resolved", "priority": "high", "add_tags": ["billing"]},
        headers=auth(alice),
    )
    assert patched.status == 200
    body = await patched.json()
    assert (body["status"], body["priority"], body["tags"]) == ("resolved", "high", ["billing"])

    ticket = await (await http.get(f"{base}/1", headers=auth(alice))).json()
    assert [m["kind"] for m in ticket["messages"]] == ["inbound", "outbound", "note"]
    assert ticket["assignee"] == {"id": alice_id, "name": "Alice"}
    kinds = [h["kind"] for h in ticket["history"]]
    assert kinds[0] == "opened" and "claimed" in kinds and kinds[-1] == "status"

    mine = await (await http.get(f"{base}?assignee=me&status=resolved", headers=auth(alice))).json()
    assert [t["number"] for t in mine["tickets"]] == [1]
    tagged = await (await http.get(f"{base}?tag=billing", headers=auth(bob))).json()
    assert [t["number"] for t in tagged["tickets"]] == [1]

    supervisor, _ = await server.token("supervisor")
    outbox = await (
        await http.get(f"{server.base_url}/api/v1/outbox", headers=auth(supervisor))
    ).json()
    keys = sorted(r["idempotency_key"].split(":")[0] for r in outbox["rows"])
    # acknowledgements, "Alice has your ticket", the reply, the rating question; never the note
    assert keys == ["ack", "ack", "claimed", "csat", "reply"]
    assert {r["status"] for r in outbox["rows"]} == {"queued"}  # no email adapter configured


async def test_transition_and_lookup_errors(server: Server, http) -> None:
    await submit(http, server)
    agent, _ = await server.token("agent")
    base = f"{server.base_url}/api/v1/tickets"
    closed = await http.patch(f"{base}/1", json={"status": "closed"}, headers=auth(agent))
    assert closed.status == 409
    assert "'new' to 'closed'" in (await closed.json(content_type=None))["detail"]
    assert (await http.get(f"{base}/999", headers=auth(agent))).status == 404
    assert (await http.get(f"{base}/abc", headers=auth(agent))).status == 404
    bad = await http.patch(f"{base}/1", json={"status": "archived"}, headers=auth(agent))
    assert (bad.status, (await bad.json(content_type=None))["field"]) == (400, "status")
    assign = await http.post(f"{base}/1/assign", json={"agent_id": 1}, headers=auth(agent))
    assert assign.status == 403


async def test_agents_see_their_team_and_the_general_queue(server_factory, http) -> None:
    server = await server_factory(inboxes=[{"name": "billing", "team": "billing"}])
    await server.helpdesk.ingest(
        InboundMessage(
            channel=Channel.EMAIL,
            external_id="b1",
            sender=Sender("c@example.org"),
            text="refund please",
            received_at=server.helpdesk.clock(),
            inbox="billing",
        )
    )
    await submit(http, server)
    tech, _ = await server.token("agent", team="tech")
    billing, _ = await server.token("agent", team="billing")
    base = f"{server.base_url}/api/v1/tickets"
    seen_by_tech = await (await http.get(base, headers=auth(tech))).json()
    seen_by_billing = await (await http.get(base, headers=auth(billing))).json()
    assert [t["number"] for t in seen_by_tech["tickets"]] == [2]
    assert sorted(t["number"] for t in seen_by_billing["tickets"]) == [1, 2]
    assert (await http.get(f"{base}/1", headers=auth(tech))).status == 404


async def test_openapi_lists_every_route(server: Server, http) -> None:
    doc = await (await http.get(f"{server.base_url}/api/v1/openapi.json")).json()
    assert doc["openapi"].startswith("3.")
    ops = {(path, method) for path, item in doc["paths"].items() for method in item}
    for expected in [
        ("/api/v1/messages", "post"),
        ("/api/v1/tickets", "get"),
        ("/api/v1/tickets/{number}", "get"),
        ("/api/v1/tickets/{number}", "patch"),
        ("/api/v1/tickets/{number}/claim", "post"),
        ("/api/v1/tickets/{number}/replies", "post"),
        ("/api/v1/tickets/{number}/notes", "post"),
        ("/api/v1/tickets/{number}/assign", "post"),
    ]:
        assert expected in ops
    routes = {
        (r.resource.canonical, r.method.lower())
        for r in server.app.router.routes()
        if r.resource is not None
        and r.resource.canonical.startswith("/api/v1/")
        and r.method != "HEAD"
    }
    assert routes - {("/api/v1/openapi.json", "get")} == ops


async def test_health_and_metrics(server: Server, http) -> None:
    health = await http.get(f"{server.base_url}/healthz")
    assert health.status == 200 and (await health.json())["database"] == "ok"
    await submit(http, server)
    text = await (await http.get(f"{server.base_url}/metrics")).text()
    assert 'helpline_outbox_rows{channel="email",status="queued"} 1.0' in text
    assert 'helpline_events_total{type="TicketOpened"} 1.0' in text
    assert "helpline_http_request_seconds_bucket" in text
    # the series are kept between requests: they count on
    await submit(http, server, subject="Second printer on fire")
    text = await (await http.get(f"{server.base_url}/metrics")).text()
    assert 'helpline_events_total{type="TicketOpened"} 2.0' in text
    assert (
        'helpline_http_request_seconds_count{method="POST",route="/api/v1/messages",'
        'status="201"} 2.0'
    ) in text


# -- regressions found by the schemathesis run (tests/gateway/test_schemathesis.py) ---------


async def test_out_of_range_ids_are_4xx_not_500(server: Server, http) -> None:
    """Ids past 64 bits overflowed the database driver, and "²" passed str.isdigit() but not
    int(): both were 500s."""
    await submit(http, server)
    admin, _ = await server.token("admin")
    base = f"{server.base_url}/api/v1"
    huge = "622564711922714116204062048256"
    for path in (
        f"/tickets/1/attachments/{huge}",
        "/tickets/1/attachments/%C2%B2",
        f"/tickets/{huge}",
        "/tickets/%C2%B2",
        f"/quarantine/{huge}/raw",
    ):
        response = await http.get(base + path, headers=auth(admin))
        assert response.status == 404, path
        assert response.content_type == "application/problem+json"
    cases = [
        ("GET", "/tickets?offset=99999999999999999999999", None, "offset"),
        ("GET", "/tickets?assignee=%C2%B2", None, "assignee"),
        ("GET", "/reports?agent=%C2%B2", None, "agent"),
        (
            "POST",
            "/tickets/1/assign",
            {"agent_id": -2135757028105834133020015325438017536},
            "agent_id",
        ),
        ("POST", "/tickets/1/assign", {"agent_id": 2**63}, "agent_id"),
    ]
    for method, path, body, field in cases:
        response = await http.request(method, base + path, json=body, headers=auth(admin))
        problem = await response.json(content_type=None)
        assert (response.status, problem.get("field")) == (400, field), (path, problem)


async def test_text_no_database_can_store_is_400(server: Server, http) -> None:
    """NUL (PostgreSQL refuses it in text) and unpaired surrogates (UTF-8 cannot encode them)
    were 500s, as was JSON nested past the recursion limit."""
    await submit(http, server)
    admin, _ = await server.token("admin")
    base = f"{server.base_url}/api/v1"
    as_json = {"Content-Type": "application/json", **auth(admin)}
    cases = [
        ("POST", "/messages", b'{"email": "a@b.org", "body": "a\\u0000b"}', "body"),
        (
            "POST",
            "/messages",
            b'{"email": "a@b.org", "body": "x", "subject": "\\ud800"}',
            "subject",
        ),
        ("POST", "/messages", b"[" * 100_000, "body"),
        ("PATCH", "/tickets/1", b'{"status": "pending", "reason": "\\udc00"}', "reason"),
        ("PATCH", "/tickets/1", b'{"add_tags": ["a\\u0000"]}', "add_tags"),
        ("GET", "/tickets?q=%00", None, "q"),
        ("GET", "/tickets?tag=a%00b", None, "tag"),
        ("GET", "/reports?team=%00", None, "team"),
    ]
    for method, path, body, field in cases:
        response = await http.request(method, base + path, data=body, headers=as_json)
        problem = await response.json(content_type=None)
        assert (response.status, problem.get("field")) == (400, field), (path, problem)
    # the ticket did not change
    ticket = await (await http.get(f"{base}/tickets/1", headers=auth(admin))).json()
    assert (ticket["status"], ticket["tags"]) == ("new", [])
