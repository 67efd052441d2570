"""Robustness run: schemathesis generates requests for every operation of the served OpenAPI
document and no answer may be a 5xx.

The server runs in the test's event loop; schemathesis and hypothesis are synchronous, so the
whole run goes to a worker thread (``asyncio.to_thread``) and the loop keeps serving. Bounds
(CI must stay fast): ``MAX_EXAMPLES`` per operation and generation mode, derandomized, and a
time budget for the whole run that fails the test rather than letting it hang.

Every answer is also checked against its declared response schema. That has teeth for 4xx
(the ``Problem`` document); 2xx bodies are declared as bare ``{"type": "object"}`` so far, so
their check gets stronger as routes declare real schemas.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import hypothesis
import requests
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.conftest import Server, ServerFactory

MAX_EXAMPLES = 15
TIME_BUDGET = 90.0  # seconds for the whole run: fails the test instead of dragging CI
REQUEST_TIMEOUT = 10.0
MODES = (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)
SEEDED = (1, 2, 3)  # ticket numbers opened before the run


class OutOfTime(Exception):
    """The run went past TIME_BUDGET."""


@dataclass
class Run:
    base_url: str
    headers: dict[str, str]
    deadline: float  # time.monotonic()
    session: requests.Session
    failures: list[str] = field(default_factory=list)
    calls: int = 0
    by_status: dict[int, int] = field(default_factory=dict)


def cases(operation: Any, mode: schemathesis.GenerationMode) -> st.SearchStrategy[Any]:
    """Generated cases; for a ticket's routes half of them aim at a seeded ticket, since a
    generated number mostly misses and would test little more than the 404."""
    anywhere = operation.as_strategy(generation_mode=mode)
    if "{number}" not in operation.path:
        return anywhere
    seeded = st.sampled_from(SEEDED).flatmap(
        lambda n: operation.as_strategy(generation_mode=mode, path_parameters={"number": n})
    )
    return st.one_of(anywhere, seeded)


def fuzz(operation: Any, mode: schemathesis.GenerationMode, run: Run, checks: list[Any]) -> None:
    """Hypothesis drives schemathesis's strategy for one operation; raises the first failure
    (shrunk to a minimal case, with a curl line to reproduce it)."""

    @hypothesis.settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,  # the same requests on every run: a failure reproduces
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=cases(operation, mode))
    def exercise(case: schemathesis.Case) -> None:
        if time.monotonic() > run.deadline:
            raise OutOfTime(f"over {TIME_BUDGET}s, at {operation.label} ({mode.value})")
        response = case.call(
            base_url=run.base_url,
            session=run.session,
            headers=run.headers,
            timeout=REQUEST_TIMEOUT,
        )
        run.calls += 1
        run.by_status[response.status_code] = run.by_status.get(response.status_code, 0) + 1
        case.validate_response(response, checks=checks, headers=run.headers)

    exercise()


def run_schemathesis(base_url: str, token: str) -> Run:
    """Load the schema from the running server and fuzz every operation (blocking)."""
    schema = schemathesis.openapi.from_url(f"{base_url}/api/v1/openapi.json", timeout=10)
    run = Run(
        base_url,
        {"Authorization": f"Bearer {token}"},
        time.monotonic() + TIME_BUDGET,
        requests.Session(),
    )
    for result in schema.get_all_operations():
        operation = result.ok()
        checks = [not_a_server_error, response_schema_conformance]
        for mode in MODES:
            try:
                fuzz(operation, mode, run, checks)
            except OutOfTime:
                raise
            # one operation's failure must not hide the others' (schemathesis raises its
            # failures as a BaseExceptionGroup, which `except Exception` does not catch)
            except (Exception, BaseExceptionGroup) as err:
                run.failures.append(f"{operation.label} [{mode.value}]:\n{err}")
    return run


async def seed(server: Server, http: aiohttp.ClientSession) -> None:
    """A few tickets, so generated ticket numbers (small integers first) find real ones."""
    for n in SEEDED:
        body = {"name": f"Customer {n}", "email": f"c{n}@example.org", "body": f"Help {n}"}
        async with http.post(f"{server.base_url}/api/v1/messages", json=body) as response:
            assert response.status == 201, await response.text()


async def test_no_operation_answers_a_server_error(server_factory: ServerFactory) -> None:
    # a limit far above what the run sends: the intake route must be exercised, not just 429
    server: Server = await server_factory(intake={"rate_limit_per_minute": 100_000})
    token, _ = await server.token("admin")
    async with aiohttp.ClientSession() as http:
        await seed(server, http)
    run = await asyncio.to_thread(run_schemathesis, server.base_url, token)
    print(f"{run.calls} requests, by status: {sorted(run.by_status.items())}")
    assert run.calls > 0
    assert not run.failures, "\n\n".join(run.failures)
