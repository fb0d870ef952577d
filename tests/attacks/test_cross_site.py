"""Another site's page in the user's browser, against an API without a token: DNS rebinding, cross-site
forms, framing, and an API opened to the network by mistake. Each test is one probe of issue 22."""

from __future__ import annotations

import pytest

from tests.support.processes import Stack, embedded_settings, gradsweep, running_stack

SWEEP = {"name": "target", "learning_rates": [0.01], "seeds": [0], "epochs": 5}


@pytest.fixture
def sweep_id(open_api: Stack) -> int:
    created = open_api.http.post("/sweeps", json=SWEEP)
    assert created.status_code == 201, created.text
    return created.json()["id"]


@pytest.mark.parametrize("method,path", [("GET", "/sweeps"), ("GET", "/"), ("DELETE", "/sweeps/{id}"),
                                         ("GET", "/sweeps/{id}/losses?format=csv")])
def test_a_dns_rebinding_page_is_refused_by_its_host(open_api: Stack, sweep_id: int, method: str, path: str):
    # The rebound page's requests reach 127.0.0.1, but say the attacker's name in Host.
    answer = open_api.http.request(method, path.format(id=sweep_id), headers={"Host": "attacker.example"})
    assert answer.status_code == 400, answer.text
    assert "attacker.example" in answer.json()["detail"]
    assert open_api.http.get(f"/sweeps/{sweep_id}").status_code == 200  # not deleted


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "LOCALHOST:8000"])
def test_our_own_names_are_served(open_api: Stack, host: str):
    assert open_api.http.get("/sweeps", headers={"Host": host}).status_code == 200


@pytest.mark.parametrize("action", ["cancel", "retry"])
@pytest.mark.parametrize("headers", [
    {"Origin": "http://evil.example", "Content-Type": "application/x-www-form-urlencoded"},
    {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site", "Content-Type": "text/plain"},
    {"Sec-Fetch-Site": "same-site", "Content-Type": "multipart/form-data; boundary=x"},  # another port of localhost
    {"Origin": "null", "Content-Type": "application/x-www-form-urlencoded"},  # a sandboxed frame's form
], ids=["origin", "fetch-metadata", "same-site", "null-origin"])
def test_a_cross_site_form_cannot_change_a_sweep(open_api: Stack, sweep_id: int, action: str, headers: dict):
    answer = open_api.http.post(f"/sweeps/{sweep_id}/{action}", content=b"x=1", headers=headers)
    assert answer.status_code == 403, answer.text
    assert open_api.http.get(f"/sweeps/{sweep_id}").json()["counts"]["cancelled"] == 0
    deleted = open_api.http.delete(f"/sweeps/{sweep_id}", headers=headers)
    assert deleted.status_code == 403 and open_api.http.get(f"/sweeps/{sweep_id}").status_code == 200


def test_the_dashboards_own_requests_and_scripts_still_change_sweeps(open_api: Stack, sweep_id: int):
    same_origin = {"Origin": open_api.url, "Sec-Fetch-Site": "same-origin"}
    assert open_api.http.post(f"/sweeps/{sweep_id}/cancel", headers=same_origin).status_code == 200
    assert open_api.http.post(f"/sweeps/{sweep_id}/retry").status_code == 200  # no Origin: curl, the CLI


def test_a_json_route_refuses_a_form_body(open_api: Stack):
    # A page can send JSON text without a preflight: as a form, or by fetch() of a Blob, which has no
    # Content-Type at all; FastAPI (>= 0.132) reads a body as JSON only when it says it is JSON.
    body = b'{"name": "from a form", "learning_rates": [0.01], "seeds": [0], "epochs": 5}'
    for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = {} if content_type is None else {"Content-Type": content_type}
        answer = open_api.http.post("/sweeps", content=body, headers=headers)
        assert answer.status_code == 422, (content_type, answer.text)
    assert all(sweep["name"] != "from a form" for sweep in open_api.http.get("/sweeps").json())


@pytest.mark.parametrize("path", ["/", "/ui/sweeps/{id}", "/ui/compare", "/ui/tokens", "/ui/sweeps/99999"])
def test_every_html_page_carries_the_security_headers(open_api: Stack, sweep_id: int, path: str):
    answer = open_api.http.get(path.format(id=sweep_id))
    assert answer.headers["content-type"].startswith("text/html")
    policy = dict(part.strip().split(" ", 1) for part in answer.headers["content-security-policy"].split(";"))
    assert "'unsafe-inline'" not in policy["script-src"] and "'self'" in policy["script-src"]
    assert policy["frame-ancestors"] == "'none'" and policy["object-src"] == "'none'"
    assert answer.headers["x-frame-options"] == "DENY"
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["referrer-policy"] == "no-referrer"
    assert "<script>" not in answer.text and " on" + "click=" not in answer.text  # no inline script at all


def test_the_docs_have_their_own_policy_and_data_answers_a_closed_one(open_api: Stack, sweep_id: int):
    docs = open_api.http.get("/docs")
    assert "frame-ancestors 'none'" in docs.headers["content-security-policy"]
    assert docs.headers["x-frame-options"] == "DENY"
    for path in ("/sweeps", f"/sweeps/{sweep_id}/losses?format=csv", "/healthz"):
        answer = open_api.http.get(path)
        assert answer.headers["content-security-policy"].startswith("default-src 'none'")
        assert answer.headers["x-content-type-options"] == "nosniff"


def test_the_api_will_not_listen_beyond_loopback_without_a_token(tmp_path):
    settings = embedded_settings(tmp_path)
    stack = Stack(settings, tmp_path)
    stack.migrate()
    refused = gradsweep("api", "--host", "0.0.0.0", "--port", "1", env=stack.env, cwd=tmp_path)
    assert refused.returncode != 0
    assert "without a token" in refused.stderr + refused.stdout and "--allow-open" in refused.stderr + refused.stdout
    stack.http.close()


def test_another_origin_named_by_cors_may_change_sweeps(tmp_path):
    settings = embedded_settings(tmp_path, GRADSWEEP_CORS_ORIGINS='["https://dash.example.org"]')
    with running_stack(settings, tmp_path, concurrency=None) as stack:
        created = stack.http.post("/sweeps", json=SWEEP, headers={"Origin": "https://dash.example.org",
                                                                  "Sec-Fetch-Site": "cross-site"})
        assert created.status_code == 201, created.text
        refused = stack.http.post("/sweeps", json=SWEEP, headers={"Origin": "https://other.example.org"})
        assert refused.status_code == 403
