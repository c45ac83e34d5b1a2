"""How a Chat Completions request goes over HTTP: the official openai client, or raw aiohttp.

Both speak the same OpenAI wire protocol and raise the same three errors, named after the
openai client's classes so metrics read the same whichever transport ran:

- ``Transient``: worth another attempt (429, 5xx, timeouts, dropped connections, a body cut short);
- ``Rejected``: this request will fail again (400, 422, ...); it ends in the rejects file;
- ``Fatal``: no request can succeed (401, 403, 404: key, permission or model wrong); the run stops.

``openai`` (the default) uses the official client with ``max_retries=0`` through its
low-level ``post``: the typed ``chat.completions.create`` spends about 1 ms of CPU per call
building and validating TypedDicts and pydantic models, which caps one event loop near
650 requests/s here. ``aiohttp`` is a thin hand-written path for self-hosted servers at
hundreds of concurrent requests, where even the client's request plumbing is the
bottleneck (see benchmarks/teacher_throughput.py).
"""

from __future__ import annotations

import json
from typing import Protocol

import aiohttp
import openai

from distill.entry import StageError


class Transient(Exception):
    def __init__(self, kind: str, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.kind, self.retry_after = kind, retry_after


class Rejected(Exception):
    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


class Fatal(StageError):
    """No request can succeed; the stage stops with this message (answers so far are kept)."""


class Transport(Protocol):
    async def complete(self, payload: dict, idempotency_key: str | None = None) -> dict: ...

    async def close(self) -> None: ...

    async def __aenter__(self) -> Transport: ...

    async def __aexit__(self, *exc: object) -> None: ...


class Closing:
    """``async with transport:`` closes its connections on the way out."""

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def retry_after(headers) -> float | None:
    """Seconds the server asked us to wait: ``retry-after-ms`` first, then ``retry-after``."""
    if headers is None:
        return None
    if "retry-after-ms" in headers:
        return float(headers["retry-after-ms"]) / 1000
    value = headers.get("retry-after", "")
    return float(value) if value.replace(".", "", 1).isdigit() else None


class OpenAITransport(Closing):
    def __init__(self, base_url: str, api_key: str, timeout_s: float):
        # aiohttp under the client: at high concurrency the default httpx transport stalls
        self.client = openai.AsyncOpenAI(
            base_url=base_url, api_key=api_key, max_retries=0, timeout=timeout_s,
            http_client=openai.DefaultAioHttpClient(timeout=timeout_s),
        )

    async def complete(self, payload: dict, idempotency_key: str | None = None) -> dict:
        options = {"headers": {"Idempotency-Key": idempotency_key}} if idempotency_key else {}
        try:
            body = await self.client.post("/chat/completions", body=payload, cast_to=bytes, options=options)
            return json.loads(body)
        except (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError) as error:
            raise Fatal(f"{type(error).__name__}: {error}") from None
        except openai.APIStatusError as error:
            kind = type(error).__name__
            if error.status_code == 429 or error.status_code >= 500 or error.status_code in (408, 409):
                raise Transient(kind, str(error), retry_after(error.response.headers)) from None
            raise Rejected(kind, str(error)) from None
        except (openai.APIConnectionError, openai.APIResponseValidationError) as error:  # timeouts included
            raise Transient(type(error).__name__, str(error)) from None
        except ValueError as error:  # a JSON body cut short
            raise Transient(type(error).__name__, str(error)) from None

    async def close(self) -> None:
        await self.client.close()


STATUS_KIND = {429: "RateLimitError", 400: "BadRequestError", 422: "UnprocessableEntityError",
               401: "AuthenticationError", 403: "PermissionDeniedError", 404: "NotFoundError"}


class AiohttpTransport(Closing):
    def __init__(self, base_url: str, api_key: str, timeout_s: float):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),  # the engine's semaphore is the bound
            timeout=aiohttp.ClientTimeout(total=timeout_s),
            headers={"Authorization": f"Bearer {api_key}"},
        )

    async def complete(self, payload: dict, idempotency_key: str | None = None) -> dict:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        try:
            async with self.session.post(self.url, json=payload, headers=headers) as response:
                body = await response.read()
                status, headers = response.status, response.headers
        except TimeoutError as error:
            raise Transient("APITimeoutError", "request timed out") from error
        except aiohttp.ClientError as error:
            raise Transient("APIConnectionError", str(error)) from None
        if status >= 400:
            kind = STATUS_KIND.get(status, "InternalServerError" if status >= 500 else "APIStatusError")
            message = f"HTTP {status}: {body[:300].decode('utf-8', 'replace')}"
            if status in (401, 403, 404):
                raise Fatal(f"{kind}: {message}")
            if status == 429 or status >= 500 or status in (408, 409):
                raise Transient(kind, message, retry_after(headers))
            raise Rejected(kind, message)
        try:
            return json.loads(body)
        except ValueError as error:
            raise Transient(type(error).__name__, str(error)) from None

    async def close(self) -> None:
        await self.session.close()


TRANSPORTS = {"openai": OpenAITransport, "aiohttp": AiohttpTransport}


def make_transport(name: str, base_url: str, api_key: str, timeout_s: float) -> Transport:
    """The transport ``name`` for ``base_url``; an ``hf://`` URL (a local Hugging Face teacher, see
    endpoint.hf_url) is always the in-process ``HFTransport``, whatever the name."""
    if base_url.startswith("hf://"):
        from distill.teacher.hf_local import HFTransport

        return HFTransport.from_url(base_url)
    if name not in TRANSPORTS:
        raise ValueError(f"DISTILL_TEACHER_TRANSPORT={name!r}: use one of {sorted(TRANSPORTS)}")
    return TRANSPORTS[name](base_url, api_key, timeout_s)

