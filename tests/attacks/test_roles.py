"""Tokens with roles, made and revoked while the API runs: what a read token may not do, what a write
token may, who did what (the audit log), and a dashboard that offers only what the token may do."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.processes import Stack, embedded_settings, gradsweep, running_stack

SWEEP = {"name": "roles", "learning_rates": [0.01], "seeds": [0], "epochs": 5}
ENV_TOKEN = "env-token-of-the-deployment"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """An API with GRADSWEEP_API_TOKEN set, as compose runs it; named tokens are made by the tests."""
    workdir = tmp_path_factory.mktemp("roles")
    with running_stack(embedded_settings(workdir, GRADSWEEP_API_TOKEN=ENV_TOKEN), workdir, concurrency=None) as stack:
        yield stack


def cli_token(stack: Stack, name: str, role: str) -> str:
    """`gradsweep token create`, on the database, with the API running: the secret it prints."""
    made = gradsweep("token", "create", name, "--role", role, env=stack.env, cwd=stack.workdir)
    assert made.returncode == 0, made.stdout + made.stderr
    return made.stdout.strip().splitlines()[-1]


def client(stack: Stack, secret: str | None) -> httpx.Client:
    return httpx.Client(base_url=stack.url, timeout=30,
                        headers={"Authorization": f"Bearer {secret}"} if secret else {})


def test_a_read_token_reads_everything_and_changes_nothing(api: Stack):
    sweep_id = api.http.post("/sweeps", json=SWEEP).json()["id"]
    with client(api, cli_token(api, "reader", "read")) as reader:
        for path in (f"/sweeps/{sweep_id}", f"/sweeps/{sweep_id}/runs", f"/sweeps/{sweep_id}/losses?format=csv",
                     "/sweeps", "/audit"):
            assert reader.get(path).status_code == 200, path
        for method, path in [("POST", "/sweeps"), ("POST", f"/sweeps/{sweep_id}/cancel"),
                             ("POST", f"/sweeps/{sweep_id}/retry"), ("DELETE", f"/sweeps/{sweep_id}"),
                             ("GET", "/tokens"), ("POST", "/tokens"), ("DELETE", "/tokens/reader")]:
            answer = reader.request(method, path, json=SWEEP if path == "/sweeps" else {"name": "mine"})
            assert answer.status_code == 403, (method, path, answer.text)
            assert "write token" in answer.json()["detail"]
    assert api.http.get(f"/sweeps/{sweep_id}").json()["counts"]["queued"] == 1


def test_a_write_token_changes_sweeps_and_the_audit_log_says_who(api: Stack):
    with client(api, cli_token(api, "ci-bot", "write")) as writer:
        created = writer.post("/sweeps", json=SWEEP)
        assert created.status_code == 201 and created.json()["created_by"] == "ci-bot"
        sweep_id = created.json()["id"]
        assert writer.post(f"/sweeps/{sweep_id}/cancel").status_code == 200
        assert writer.post(f"/sweeps/{sweep_id}/retry").status_code == 200
    assert api.http.post(f"/sweeps/{sweep_id}/cancel").status_code == 200  # GRADSWEEP_API_TOKEN: a write token
    assert api.http.delete(f"/sweeps/{sweep_id}").status_code == 204
    entries = api.http.get("/audit", params={"sweep_id": sweep_id}).json()
    assert [(e["actor"], e["action"]) for e in reversed(entries)] == [
        ("ci-bot", "create"), ("ci-bot", "cancel"), ("ci-bot", "retry"),
        ("GRADSWEEP_API_TOKEN", "cancel"), ("GRADSWEEP_API_TOKEN", "delete")]


def test_tokens_are_made_listed_and_revoked_without_a_restart(api: Stack):
    secret = cli_token(api, "laptop", "write")
    assert secret.startswith("gsk_") and len(secret) > 40
    with client(api, secret) as laptop:
        assert laptop.get("/sweeps").status_code == 200
        # Through the API too: a write token makes a read token, shown once.
        made = laptop.post("/tokens", json={"name": "dashboard-viewer", "role": "read"})
        assert made.status_code == 201, made.text
        with client(api, made.json()["token"]) as viewer:
            assert viewer.get("/sweeps").status_code == 200
            assert laptop.delete("/tokens/dashboard-viewer").json()["revoked_at"] is not None
            assert viewer.get("/sweeps").status_code == 401
        assert laptop.post("/tokens", json={"name": "laptop"}).status_code == 409
        assert laptop.post("/tokens", json={"name": "bad name\u001b"}).status_code == 422
        listed = {t["name"]: t for t in laptop.get("/tokens").json()}
        assert listed["laptop"]["role"] == "write" and "token" not in listed["laptop"]
        assert listed["dashboard-viewer"]["revoked_at"] is not None

        listing = gradsweep("token", "list", env=api.env, cwd=api.workdir)
        assert "laptop" in listing.stdout and "dashboard-viewer" in listing.stdout and secret not in listing.stdout
        revoked = gradsweep("token", "revoke", "laptop", env=api.env, cwd=api.workdir)
        assert revoked.returncode == 0, revoked.stderr
        assert laptop.get("/sweeps").status_code == 401  # the running API saw it at once
    assert gradsweep("token", "revoke", "nobody", env=api.env, cwd=api.workdir).returncode != 0
    actions = {(e["actor"], e["action"], e["detail"]) for e in api.http.get("/audit").json()}
    assert {("cli", "create token", "laptop (write)"), ("laptop", "revoke token", "dashboard-viewer"),
            ("cli", "revoke token", "laptop")} <= actions


def test_no_token_or_a_wrong_one_is_401(api: Stack):
    with client(api, None) as anonymous, client(api, "gsk_" + "x" * 43) as wrong:
        for http in (anonymous, wrong):
            assert http.get("/sweeps").status_code == 401
            assert http.post("/sweeps", json=SWEEP).status_code == 401
            assert http.get("/audit").status_code == 401


def test_the_dashboard_offers_a_read_token_no_buttons_that_would_be_refused(api: Stack):
    sweep_id = api.http.post("/sweeps", json=SWEEP).json()["id"]
    fragment = {"X-Gradsweep-Fragment": "1"}
    with client(api, cli_token(api, "viewer", "read")) as reader:
        page = reader.get(f"/ui/sweeps/{sweep_id}", headers=fragment).text
        assert "Download CSV" in page
        assert "data-action" not in page and "data-delete" not in page
        assert reader.get("/ui/tokens", headers=fragment).status_code == 403
        assert "/ui/tokens" not in reader.get("/", headers=fragment).text
    page = api.http.get(f"/ui/sweeps/{sweep_id}", headers=fragment).text
    assert f'data-action="/sweeps/{sweep_id}/cancel"' in page and f'data-delete="/sweeps/{sweep_id}"' in page
    assert "by <span data-created-by>GRADSWEEP_API_TOKEN</span>" in page
    tokens = api.http.get("/ui/tokens", headers=fragment).text
    assert "viewer" in tokens and 'data-revoke="/tokens/viewer"' in tokens


def test_an_open_api_closes_once_it_has_a_token(tmp_path: Path):
    with running_stack(embedded_settings(tmp_path), tmp_path, concurrency=None) as stack:
        assert stack.http.post("/sweeps", json=SWEEP).json()["created_by"] == "anonymous"
        secret = cli_token(stack, "first", "write")
        assert stack.http.get("/sweeps").status_code == 401
        with client(stack, secret) as first:
            assert first.get("/sweeps").status_code == 200
