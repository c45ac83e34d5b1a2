"""How a Chat Completions request goes over HTTP: the official openai client, or raw aiohttp.

Both speak the same OpenAI wire protocol and raise the same three errors, named after the
openai client's classes so metrics read the same whichever transport ran:

- ``Transient``: worth another attempt (429, 5xx, timeouts, dropped connections, a body cut short);
- ``Rejected``: this request will fail again (400, 422, ...); it ends in the rejects file;
- ``Fatal``: no request can succeed (401, 403, 404: key, permission or model wrong); the run stops.

Their messages are scrubbed of API keys as they are made (distill/teacher/secrets.py): servers echo the key,
masked or not, and these messages reach Prefect's logs and database, the rejects file and the metrics. The
client's own exception (with the raw body) is never chained onto them (``from None``).

``openai`` (the default) uses the official client with ``max_retries=0`` through its
low-level ``post``: the typed ``chat.completions.create`` spends about 1 ms of CPU per call
building and validating TypedDicts and pydantic models, which caps one event loop near
650 requests/s here. ``aiohttp`` is a thin hand-written path for self-hosted servers at
hundreds of concurrent requests, where even the client's request plumbing is the
bottleneck (see benchmarks/teacher_throughput.py).
"""

from __future__ import annotations

from typing import Protocol

import aiohttp
import openai
from pydantic_core import from_json  # unlike json.loads, refuses lone surrogates, which no file can hold

from distill.entry import StageError
from distill.teacher.secrets import remember, scrub


class Transient(Exception):
    def __init__(self, kind: str, message: str, retry_after: float | None = None):
        super().__init__(scrub(message))
        self.kind, self.retry_after = kind, retry_after


class Rejected(Exception):
    def __init__(self, kind: str, message: str):
        super().__init__(scrub(message))
        self.kind = kind


class Fatal(StageError):
    """No request can succeed; the stage stops with this message (answers so far are kept)."""

    def __init__(self, message: str):
        super().__init__(scrub(message))


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
    """Seconds the server asked us to wait: ``retry-after-ms`` first, then ``retry-after``. As the openai client
    does, only a number in (0, 60] s counts: junk, a date or an hour's wait falls back to our own backoff."""
    if headers is None:
        return None
    for name, scale in (("retry-after-ms", 1000), ("retry-after", 1)):
        try:
            seconds = float(headers.get(name, "")) / scale
        except ValueError:
            continue
        if 0 < seconds <= 60:  # NaN fails this too
            return seconds
    return None


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
            return from_json(body)
        except (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError) as error:
            raise Fatal(f"{type(error).__name__}: {error}") from None
        except openai.APIStatusError as error:
            kind = type(error).__name__
            if error.status_code == 429 or error.status_code >= 500 or error.status_code in (408, 409):
                raise Transient(kind, str(error), retry_after(error.response.headers)) from None
            raise Rejected(kind, str(error)) from None
        except (openai.APIConnectionError, openai.APIResponseValidationError) as error:  # timeouts included
            raise Transient(type(error).__name__, str(error)) from None
        except ValueError as error:  # a JSON body cut short, invalid UTF-8, a lone surrogate
            raise Transient("JSONDecodeError", str(error)) from None

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
            return from_json(body)
        except ValueError as error:
            raise Transient("JSONDecodeError", str(error)) from None

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
    remember(api_key)
    return TRANSPORTS[name](base_url, api_key, timeout_s)

