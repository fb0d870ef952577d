"""A small client of the HTTP API, for the CLI: the API's errors become `ApiError` with its message."""

from __future__ import annotations

from typing import Any

import httpx

from service.settings import get_settings


class ApiError(Exception):
    """The API refused a request, or could not be reached."""


class Client:
    def __init__(self, base_url: str | None = None, token: str | None = None, timeout: float = 30.0) -> None:
        settings = get_settings()
        token = token if token is not None else settings.api_token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=base_url or settings.api_url, headers=headers, timeout=timeout)

    def get(self, path: str, **params: Any) -> httpx.Response:
        return self._send("GET", path, params=params)

    def post(self, path: str, json: Any = None) -> httpx.Response:
        return self._send("POST", path, json=json)

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as error:
            raise ApiError(f"cannot reach the API at {self.http.base_url}: {error}") from error
        if response.is_error:
            raise ApiError(f"{method} {path}: HTTP {response.status_code}: {_detail(response)}")
        return response


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        return response.text
    if isinstance(detail, list):  # FastAPI's validation errors: name each field
        return "; ".join(f"{'.'.join(str(p) for p in e.get('loc', [])[1:])}: {e.get('msg')}" for e in detail)
    return str(detail)
