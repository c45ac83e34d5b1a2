"""A local Hugging Face teacher (``teacher.provider: hf``): the ``Transport`` protocol in-process.

``HFTransport.complete`` takes the same Chat Completions payload as the HTTP transports and
returns an OpenAI-shaped ``chat.completion`` dict, so the engine, the request store, the budget
and the feature extraction work unchanged. Concurrent calls are *micro-batched*: they queue up
and run together in one left-padded ``model.generate``: a batch as soon as ``batch_size`` requests
are queued, a smaller one once its oldest request has waited ``max_wait_ms`` and the model is idle.
Requests in a batch are grouped by their sampling settings (max_tokens, temperature, n, seed,
log-probs): one ``generate`` call per group, seeded by the payload's ``seed``. Greedy answers
(temperature 0) are the same whatever the batch; sampled ones depend on what else shares the batch.

Every torch call (loading and generating) runs on one thread of its own (``torch_thread``), so
the event loop stays free and the thread goes from batch to batch: the next batch is queued
behind the one generating (``DEPTH``), not formed after it ends. benchmarks/hf_teacher.py
measures this path against plain batched ``model.generate``.

Log-probabilities come from the raw logits of each step (log-softmax), the chosen token first
compared with its top-k alternatives; token strings are the tokenizer's own vocabulary entries
(``convert_ids_to_tokens``), which ``distill/elicit/features.py`` maps back to ids exactly.
Logits are kept only for requests that ask for log-probs.

The model is loaded lazily, once per process and (model, seed, device), through
``distill.student.load_model`` / ``load_tokenizer``: a config-only folder is built from its config
with ``teacher.hf.seed``. The settings travel in the pseudo base URL ``hf://<model>?<settings>``
(endpoint.hf_url); there is no API key.
"""

from __future__ import annotations

import asyncio
import math
import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qsl, unquote

from distill.teacher.transports import Closing, Fatal, Rejected, Transient

_MODELS: dict[tuple[str, int, str], tuple[object, object, str]] = {}
_LOAD_LOCK = threading.Lock()
_THREAD: tuple[int, ThreadPoolExecutor] | None = None  # (the pid that made it, the executor): a fork gets its own
_THREAD_LOCK = threading.Lock()
DEPTH = 2  # batches handed to the torch thread at a time: one generating, the next queued behind it


def torch_thread() -> ThreadPoolExecutor:
    """The one thread that runs the local teacher's torch work in this process.

    One thread, not asyncio's default pool: torch's OpenMP runtime (libgomp) gives every OS thread
    that calls it a worker pool of its own, and once pools hold more threads than there are cores,
    every barrier sleeps instead of spinning. On 2 cores that made each ``generate`` 2-2.5x slower
    than on the main thread, and the default pool hands successive batches to different threads.
    Code that runs other torch work beside the teacher in the same process can hand it here too."""
    global _THREAD
    with _THREAD_LOCK:
        if _THREAD is None or _THREAD[0] != os.getpid():
            _THREAD = (os.getpid(), ThreadPoolExecutor(max_workers=1, thread_name_prefix="hf-teacher"))
        return _THREAD[1]


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

    from distill.device import use_all_cores
    from distill.student import load_model, load_tokenizer

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    key = (model, seed, device)
    with _LOAD_LOCK:
        if key not in _MODELS:
            use_all_cores()
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


def token_logprobs(tokenizer, logits: tuple, generated, lengths: list[int], top_k: int) -> list[list[dict]]:
    """``logprobs.content`` of each row: its first ``lengths[row]`` tokens, each with its log-prob and its ``top_k``
    alternatives. ``logits``: the raw logits of each step (rows x vocab); ``generated``: the tokens (rows x steps).
    One gather and one top-k per step for the whole batch, one ``tolist`` at the end, and each token id spelled
    once: per token, these cost more than the step that made it."""
    import torch

    chosen, top_values, top_ids = [], [], []
    for step, logit in enumerate(logits[: max(lengths, default=0)]):
        logprobs = logit.float().log_softmax(-1)  # one step at a time: a stack of every step is rows x steps x vocab
        chosen.append(logprobs.gather(-1, generated[:, step : step + 1]))
        if top_k:
            values, ids = logprobs.topk(min(top_k, logprobs.shape[-1]), dim=-1)
            top_values.append(values)
            top_ids.append(ids)
    if not chosen:
        return [[] for _ in lengths]
    chosen = torch.cat(chosen, dim=1).tolist()
    top_values = torch.stack(top_values, dim=1).tolist() if top_k else None
    top_ids = torch.stack(top_ids, dim=1).tolist() if top_k else None
    ids = generated.tolist()
    spelled: dict[int, tuple[str, list[int]]] = {}

    def entry(token_id: int, logprob: float) -> dict:
        if token_id not in spelled:
            text = tokenizer.decode([token_id], skip_special_tokens=False)
            spelled[token_id] = (tokenizer.convert_ids_to_tokens(token_id), list(text.encode()))
        token, raw = spelled[token_id]
        return {"token": token, "logprob": logprob, "bytes": raw}

    rows = []
    for row, length in enumerate(lengths):
        content = []
        for position in range(length):
            item = entry(ids[row][position], chosen[row][position])
            item["top_logprobs"] = [entry(i, v) for v, i in zip(top_values[row][position], top_ids[row][position],
                                                                 strict=True) if math.isfinite(v)] if top_k else []
            content.append(item)
        rows.append(content)
    return rows


def generate_batch(model_name: str, seed: int, device: str, payloads: list[dict]) -> list[dict]:
    """One left-padded ``generate`` for requests with the same sampling settings; OpenAI-shaped
    answers in order. Blocking: run it on ``torch_thread``."""
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
               "pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id}
    if want_logprobs:  # every step's logits, batch x vocab each: only when they are asked for
        options |= {"output_logits": True, "return_dict_in_generate": True}
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
    sequences = output.sequences if want_logprobs else output
    prompt_width = batch["input_ids"].shape[1]
    generated = sequences[:, prompt_width:]
    eos = tokenizer.eos_token_id
    stopped, contents = [], []
    for tokens in generated.tolist():
        stopped.append(eos in tokens)
        contents.append(tokens[: tokens.index(eos)] if stopped[-1] else tokens)
    texts = tokenizer.batch_decode(contents, skip_special_tokens=True)
    logprobs = (token_logprobs(tokenizer, output.logits, generated, [len(ids) for ids in contents], top_k)
                if want_logprobs else None)
    prompt_lengths = batch["attention_mask"].sum(dim=1).tolist()
    created = int(time.time())
    answers = []
    for index, payload in enumerate(payloads):
        choices, completion_tokens = [], 0
        for choice in range(n):
            row = index * n + choice
            length = len(contents[row])
            completion_tokens += length + int(stopped[row])
            choices.append({
                "index": choice, "message": {"role": "assistant", "content": texts[row]},
                "finish_reason": "stop" if stopped[row] or length < max_tokens else "length",
                "logprobs": {"content": logprobs[row]} if logprobs is not None else None,
            })
        prompt_tokens = int(prompt_lengths[index])
        answers.append({
            "id": f"chatcmpl-hf-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": created,
            "model": payload.get("model", model_name),
            "choices": choices,
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        })
    return answers


Waiting = tuple[dict, asyncio.Future, float]  # a queued request: its payload, its caller's future, when it came


class HFTransport(Closing):
    """Micro-batching, in-process teacher; one per event loop (``async with``)."""

    def __init__(self, model: str, batch_size: int = 16, max_wait_ms: float = 20.0, seed: int = 0,
                 device: str = "auto"):
        self.model, self.seed, self.device = model, seed, device
        self.batch_size, self.max_wait_s = batch_size, max_wait_ms / 1000
        self.pending: list[Waiting] = []
        self.changed = asyncio.Event()  # a request came or a batch ended: the feeder looks again
        self.feeder: asyncio.Task | None = None
        self.batch_sizes: list[int] = []  # requests per batch taken off the queue, for tests and metrics

    @classmethod
    def from_url(cls, url: str) -> HFTransport:
        return cls(**parse_url(url))

    async def complete(self, payload: dict, idempotency_key: str | None = None) -> dict:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.pending.append((payload, future, loop.time()))
        self.changed.set()
        if self.feeder is None or self.feeder.done():
            self.feeder = asyncio.create_task(self._feed())
        return await future

    async def _feed(self) -> None:
        """Hand batches to the torch thread until nothing is left: a full batch at once (up to ``DEPTH`` handed
        at a time), a partial one only when the thread has nothing to do and its oldest request has waited
        ``max_wait_s``; while the thread is busy, later requests join a fuller batch instead."""
        loop = asyncio.get_running_loop()
        handed: set[asyncio.Task] = set()
        while self.pending or handed:
            self.changed.clear()
            self.pending = [item for item in self.pending if not item[1].done()]  # callers cancelled meanwhile
            idle = not handed
            due = self.pending[0][2] + self.max_wait_s - loop.time() if self.pending and idle else None
            if self.pending and len(handed) < DEPTH and (len(self.pending) >= self.batch_size or (idle and due <= 0)):
                batch, self.pending = self.pending[: self.batch_size], self.pending[self.batch_size :]
                self.batch_sizes.append(len(batch))
                task = asyncio.create_task(self._run_batch(batch))
                handed.add(task)
                task.add_done_callback(lambda done: (handed.discard(done), self.changed.set()))
                continue
            try:
                await asyncio.wait_for(self.changed.wait(), due)
            except TimeoutError:
                pass

    async def _run_batch(self, batch: list[Waiting]) -> None:
        groups: dict[tuple, list[Waiting]] = {}
        for item in batch:
            groups.setdefault(sampling_key(item[0]), []).append(item)
        await asyncio.gather(*(self._run(group) for group in groups.values()))  # queued on the one thread

    async def _run(self, group: list[Waiting]) -> None:
        try:
            answers = await asyncio.get_running_loop().run_in_executor(
                torch_thread(), generate_batch, self.model, self.seed, self.device, [item[0] for item in group])
        except Exception as error:  # noqa: BLE001 -- handed to every caller of the group
            for _, future, _ in group:
                if not future.done():
                    future.set_exception(error)
            return
        for (_, future, _), answer in zip(group, answers, strict=True):
            if not future.done():
                future.set_result(answer)

    async def close(self) -> None:
        if self.feeder is not None and not self.feeder.done():
            await self.feeder
