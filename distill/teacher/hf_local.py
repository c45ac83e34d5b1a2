"""A local Hugging Face teacher (``teacher.provider: hf``): the ``Transport`` protocol in-process.

``HFTransport.complete`` takes the same Chat Completions payload as the HTTP transports and
returns an OpenAI-shaped ``chat.completion`` dict, so the engine, the request store, the budget
and the feature extraction work unchanged. Concurrent calls are *micro-batched*: they queue up
and run together (up to ``batch_size``, or once ``max_wait_ms`` has passed) in one left-padded
``model.generate`` in a worker thread, so the event loop stays free. Requests in a batch are
grouped by their sampling settings (max_tokens, temperature, n, seed, log-probs): one
``generate`` call per group, seeded by the payload's ``seed``. Greedy answers (temperature 0) are
the same whatever the batch; sampled ones depend on what else shares the batch.

Log-probabilities come from the raw logits of each step (log-softmax), the chosen token first
compared with its top-k alternatives; token strings are the tokenizer's own vocabulary entries
(``convert_ids_to_tokens``), which ``distill/elicit/features.py`` maps back to ids exactly.

The model is loaded lazily, once per process and (model, seed, device), through
``distill.student.load_model`` / ``load_tokenizer``: a config-only folder is built from its config
with ``teacher.hf.seed``. The settings travel in the pseudo base URL ``hf://<model>?<settings>``
(endpoint.hf_url); there is no API key.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
import uuid
from urllib.parse import parse_qsl, unquote

from distill.teacher.transports import Closing, Fatal, Rejected, Transient

_MODELS: dict[tuple[str, int, str], tuple[object, object, str]] = {}
_LOAD_LOCK = threading.Lock()


def parse_url(url: str) -> dict:
    """``hf://<model>?batch_size=..&max_wait_ms=..&seed=..&device=..`` -> keyword arguments."""
    rest = url.removeprefix("hf://")
    model, _, query = rest.partition("?")
    settings = dict(parse_qsl(query))
    return {
        "model": unquote(model),
        "batch_size": int(settings.get("batch_size", 16)),
        "max_wait_ms": float(settings.get("max_wait_ms", 20.0)),
        "seed": int(settings.get("seed", 0)),
        "device": settings.get("device", "auto"),
    }


def load(model: str, seed: int, device: str) -> tuple[object, object, str]:
    """(model, tokenizer, device) for this process, loaded on first use."""
    import torch

    from distill.student import load_model, load_tokenizer

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    key = (model, seed, device)
    with _LOAD_LOCK:
        if key not in _MODELS:
            try:
                tokenizer = load_tokenizer(model)
                network = load_model(model, seed).to(device).eval()
            except Exception as error:  # noqa: BLE001 -- a missing model, bad path or device: no request can work
                raise Fatal(f"teacher.model={model}: cannot load the Hugging Face teacher: {error}") from None
            tokenizer.padding_side = "left"
            _MODELS[key] = (network, tokenizer, device)
    return _MODELS[key]


def render(tokenizer, messages: list[dict]) -> tuple[str, bool]:
    """The prompt text and whether it already holds the special tokens (a chat template does)."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True), True
    return "\n".join(str(message.get("content", "")) for message in messages), False


def sampling_key(payload: dict) -> tuple:
    """Requests that can share one ``generate`` call have the same key."""
    return tuple(payload.get(name) for name in ("max_tokens", "temperature", "n", "seed", "logprobs", "top_logprobs"))


def token_entry(tokenizer, token_id: int, logprob: float) -> dict:
    text = tokenizer.decode([token_id], skip_special_tokens=False)
    return {"token": tokenizer.convert_ids_to_tokens(token_id), "logprob": logprob, "bytes": list(text.encode())}


def generate_batch(model_name: str, seed: int, device: str, payloads: list[dict]) -> list[dict]:
    """One left-padded ``generate`` for requests with the same sampling settings; OpenAI-shaped
    answers in order. Blocking: run it in a worker thread."""
    import torch

    network, tokenizer, device = load(model_name, seed, device)
    first = payloads[0]
    max_tokens = int(first.get("max_tokens") or 16)
    temperature = float(first.get("temperature") or 0.0)
    n = int(first.get("n") or 1)
    top_k = int(first.get("top_logprobs") or 0)
    want_logprobs = bool(first.get("logprobs"))
    rendered = [render(tokenizer, payload["messages"]) for payload in payloads]
    special = rendered[0][1]
    batch = tokenizer([text for text, _ in rendered], return_tensors="pt", padding=True,
                      add_special_tokens=not special).to(device)
    options = {"max_new_tokens": max_tokens, "do_sample": temperature > 0, "num_return_sequences": n,
               "output_scores": True, "output_logits": True, "return_dict_in_generate": True,
               "pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id}
    if temperature > 0:
        options |= {"temperature": temperature, "top_k": 0, "top_p": 1.0}  # sample the whole distribution
    torch.manual_seed(int(first.get("seed") or 0))
    try:
        with torch.no_grad():
            output = network.generate(**batch, **options)
    except torch.cuda.OutOfMemoryError as error:
        raise Transient("OutOfMemoryError", str(error)) from None
    except (RuntimeError, ValueError) as error:
        raise Rejected("HFGenerationError", str(error)) from None
    prompt_width = batch["input_ids"].shape[1]
    generated = output.sequences[:, prompt_width:].tolist()
    steps = output.logits if output.logits is not None else output.scores
    logprobs = torch.stack(steps, dim=1).float().log_softmax(-1) if want_logprobs and steps else None
    eos = tokenizer.eos_token_id
    prompt_lengths = batch["attention_mask"].sum(dim=1).tolist()
    answers = []
    for index, payload in enumerate(payloads):
        choices, completion_tokens = [], 0
        for choice in range(n):
            row = index * n + choice
            tokens = generated[row]
            stopped = eos in tokens
            content_ids = tokens[: tokens.index(eos)] if stopped else tokens
            completion_tokens += len(content_ids) + int(stopped)
            message = {"role": "assistant", "content": tokenizer.decode(content_ids, skip_special_tokens=True)}
            entry = {"index": choice, "message": message,
                     "finish_reason": "stop" if stopped or len(content_ids) < max_tokens else "length",
                     "logprobs": None}
            if logprobs is not None:
                content = []
                for position, token_id in enumerate(content_ids):
                    step = logprobs[row, position]
                    item = token_entry(tokenizer, token_id, float(step[token_id]))
                    if top_k:
                        values, ids = step.topk(min(top_k, step.shape[-1]))
                        item["top_logprobs"] = [token_entry(tokenizer, int(i), float(v))
                                                for v, i in zip(values.tolist(), ids.tolist(), strict=True)
                                                if math.isfinite(v)]
                    else:
                        item["top_logprobs"] = []
                    content.append(item)
                entry["logprobs"] = {"content": content}
            choices.append(entry)
        prompt_tokens = int(prompt_lengths[index])
        answers.append({
            "id": f"chatcmpl-hf-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": payload.get("model", model_name),
            "choices": choices,
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        })
    return answers


class HFTransport(Closing):
    """Micro-batching, in-process teacher; one per event loop (``async with``)."""

    def __init__(self, model: str, batch_size: int = 16, max_wait_ms: float = 20.0, seed: int = 0,
                 device: str = "auto"):
        self.model, self.seed, self.device = model, seed, device
        self.batch_size, self.max_wait_s = batch_size, max_wait_ms / 1000
        self.pending: list[tuple[dict, asyncio.Future]] = []
        self.full = asyncio.Event()
        self.worker: asyncio.Task | None = None
        self.batch_sizes: list[int] = []  # requests per batch taken off the queue, for tests and metrics

    @classmethod
    def from_url(cls, url: str) -> HFTransport:
        return cls(**parse_url(url))

    async def complete(self, payload: dict, idempotency_key: str | None = None) -> dict:
        future = asyncio.get_running_loop().create_future()
        self.pending.append((payload, future))
        if len(self.pending) >= self.batch_size:
            self.full.set()
        if self.worker is None or self.worker.done():
            self.worker = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self.pending:
            if len(self.pending) < self.batch_size:
                self.full.clear()
                try:
                    await asyncio.wait_for(self.full.wait(), self.max_wait_s)
                except TimeoutError:
                    pass
            batch, self.pending = self.pending[: self.batch_size], self.pending[self.batch_size :]
            self.batch_sizes.append(len(batch))
            groups: dict[tuple, list[tuple[dict, asyncio.Future]]] = {}
            for item in batch:
                groups.setdefault(sampling_key(item[0]), []).append(item)
            for group in groups.values():
                await self._run(group)

    async def _run(self, group: list[tuple[dict, asyncio.Future]]) -> None:
        try:
            answers = await asyncio.to_thread(generate_batch, self.model, self.seed, self.device,
                                              [payload for payload, _ in group])
        except Exception as error:  # noqa: BLE001 -- handed to every caller of the group
            for _, future in group:
                if not future.done():
                    future.set_exception(error)
            return
        for (_, future), answer in zip(group, answers, strict=True):
            if not future.done():
                future.set_result(answer)

    async def close(self) -> None:
        if self.worker is not None and not self.worker.done():
            await self.worker
