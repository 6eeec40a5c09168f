"""Schemathesis fuzzes the RUNNING server (``observer serve`` under gunicorn,
attached to a real demo node) from its own ``/api/openapi.json``: no request,
however odd, gets a 5xx, and every answer matches the description (documented
status codes, JSON, the one error shape)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.observer.nodes import login
from tests.security.test_web_floods import LOGIN, Server


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, str]]]:
    s = Server(tmp_path_factory.mktemp("sec-fuzz"))
    try:
        http = requests.Session()
        csrf = login(http, s.base, LOGIN)
        cookie = "; ".join(f"{k}={v}" for k, v in http.cookies.items())
        yield s, {"Cookie": cookie, "X-CSRF-Token": csrf, "Origin": s.base}
    finally:
        s.stop()


def test_the_description_covers_the_json_api(fuzzed: tuple[Server, dict[str, str]]) -> None:
    server, headers = fuzzed
    doc = requests.get(f"{server.base}/api/openapi.json", headers=headers, timeout=10).json()
    assert doc["openapi"].startswith("3.")
    paths = doc["paths"]
    for p in ("/api/overview", "/api/crashes/{crash_id}", "/api/nodes/{node}/processes/{pid}", "/api/sessions"):
        assert any(k == p or k.startswith(p.split("{")[0]) for k in paths), p
    assert requests.get(f"{server.base}/api/openapi.json", timeout=10).status_code == 401  # logged in only


def test_huge_and_odd_ids_are_answered_without_a_server_error(fuzzed: tuple[Server, dict[str, str]]) -> None:
    server, headers = fuzzed
    for path in (
        "/api/crashes/99999999999999999999999",
        "/api/crashes/-1",
        "/api/nodes/demo/processes/%00",
        "/api/nodes/" + "x" * 3000,
        "/api/chaos/experiments/..%2f..%2fetc",
    ):
        r = requests.get(server.base + path, headers=headers, timeout=10)
        assert r.status_code < 500 and r.json()["error"], (path, r.status_code, r.text[:200])
    # past gunicorn's request-line limit the server itself refuses it (414) before the app runs
    r = requests.get(server.base + "/api/nodes/" + "x" * 9000, headers=headers, timeout=10)
    assert r.status_code in (400, 414)


def test_no_request_gets_a_server_error_and_answers_match_the_description(
    fuzzed: tuple[Server, dict[str, str]],
) -> None:
    server, headers = fuzzed
    schema = schemathesis.openapi.from_url(f"{server.base}/api/openapi.json", headers=headers)
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    tried = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
        def fuzz(case: schemathesis.Case) -> None:
            case.call_and_validate(headers=headers, checks=checks, timeout=30)

        fuzz()
        tried.append(operation.label)
    assert len(tried) >= 20, tried
    # and the server still serves its logged-in user
    assert requests.get(f"{server.base}/api/overview", headers=headers, timeout=10).status_code == 200
