"""Sending a plan through the Batch API (``teacher.batch``): one JSONL file per batch, at about half price.

The requests are written in the Batch API's input format (``custom_id`` = the request store's key, ``body`` =
the Chat Completions payload), uploaded to ``/v1/files`` and run by ``/v1/batches`` (OpenAI's API, which
Anthropic's OpenAI compatibility, Together and others copy; ``vllm run-batch -i`` reads the same file and writes
the same output format). Batches are polled with a growing wait and a progress bar; the output and error files are
downloaded into the request store. Uses the official client's ``files`` and ``batches`` resources.

Never paid twice, even under kill -9. Each batch's life is written to a journal beside the store
(``<store>.batches.jsonl``), every line fsynced *before* the step it announces:

1. ``intent``: the input file is written (0600, beside the store: it holds every prompt) and the batch is named;
2. the file is uploaded and the batch created with ``metadata.distill_intent`` = that name; then ``submitted``
   records the batch id;
3. when the batch ends, its answers are put into the store and fsynced; then ``collected`` closes it.

A run that starts finds every batch not yet collected: one with an id is polled again (never resubmitted); one
killed between 1 and 2 is looked up by its metadata among the provider's batches, and created only if it is not
there. Requests in a batch still running are not sent again.

Lines that failed for a passing reason (5xx, 429, the window expired) are retried in a next batch, up to
``teacher.batch.rounds`` batches, or request by request (``teacher.batch.failed: online``); lines the provider
refused (4xx) are failures, as online. Batches are split under ``max_requests`` and ``max_bytes``. With a
budget, each batch reserves its requests' worst case at the batch price before it is submitted.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import openai
from tqdm import tqdm

from distill.lifetime import private_file
from distill.params import BatchParams
from distill.teacher.engine import Budget, EngineSettings, Ledger, TeacherRequest
from distill.teacher.secrets import remember, scrub
from distill.teacher.store import RequestStore, fsync_directory
from distill.teacher.transports import Fatal

ENDPOINT = "/v1/chat/completions"
TERMINAL = ("completed", "failed", "expired", "cancelled")
LOOKUP_LIMIT = 1000  # batches searched (newest first) for one whose creation a kill left unrecorded
CREATE_ATTEMPTS = 4  # a create that errors may still have happened: each retry first looks the batch up


def journal_path(store: Path) -> Path:
    """``generate.jsonl`` -> ``generate.batches.jsonl``."""
    return store.with_name(f"{store.stem}.batches{store.suffix}")


def input_path(store: Path, intent: str) -> Path:
    """A batch's input file, beside the store until the batch is collected."""
    return store.with_name(f"{store.stem}.batch-{intent}{store.suffix}")


def input_line(request: TeacherRequest) -> str:
    return json.dumps({"custom_id": request.key, "method": "POST", "url": ENDPOINT, "body": request.payload()})


def chunks(requests: list[TeacherRequest], params: BatchParams) -> Iterable[list[TeacherRequest]]:
    """The requests split into batches under the provider's limits on requests and bytes."""
    part: list[TeacherRequest] = []
    size = 0
    for request in requests:
        line = len(input_line(request).encode()) + 1
        if part and (len(part) >= params.max_requests or size + line > params.max_bytes):
            yield part
            part, size = [], 0
        part.append(request)
        size += line
    if part:
        yield part


@dataclass
class Entry:
    """One batch as the journal knows it."""

    intent: str
    round: int  # the how-many-th batch its requests are in (1 = first try)
    batch_id: str | None = None
    collected: bool = False


class Journal:
    """``<store>.batches.jsonl``: append-only, each line fsynced before the step it records is taken."""

    def __init__(self, store: Path):
        self.store, self.path = store, journal_path(store)
        self.entries: dict[str, Entry] = {}
        if self.path.exists():
            for raw in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    line = json.loads(raw)
                except ValueError:  # a line torn by a kill: the step after it never happened
                    continue
                entry = self.entries.setdefault(line["intent"], Entry(line["intent"], line.get("round", 1)))
                entry.batch_id = line.get("batch_id") or entry.batch_id
                entry.collected = entry.collected or line["event"] == "collected"

    def write(self, event: str, entry: Entry, **facts: object) -> None:
        line = {"event": event, "intent": entry.intent, "round": entry.round, "batch_id": entry.batch_id,
                "at": datetime.now(UTC).isoformat(timespec="seconds")} | facts
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(line) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        self.entries[entry.intent] = entry

    def open_entries(self) -> list[Entry]:
        return [entry for entry in self.entries.values() if not entry.collected]


def read_input(path: Path) -> dict[str, dict]:
    """custom_id -> payload of a batch input file."""
    with path.open(encoding="utf-8") as handle:
        return {line["custom_id"]: line["body"] for line in map(json.loads, handle)}


def classify(line: dict) -> tuple[str, str, dict | None]:
    """An output or error line -> (outcome, kind, answer): outcome ``answer``, ``retry`` (a passing failure)
    or ``failure`` (the provider refused the request); kind names the error as the online transports do."""
    response = line.get("response") or {}
    status, body = response.get("status_code"), response.get("body")
    if status == 200 and isinstance(body, dict) and isinstance(body.get("choices"), list):
        return "answer", "", body
    error = line.get("error") or (body.get("error") if isinstance(body, dict) else None) or {}
    code = str(error.get("code") or "")
    if code == "batch_cancelled":
        return "failure", "BatchCancelled", None
    if code == "batch_expired":
        return "retry", "BatchExpired", None
    if status is None or status in (408, 409, 429) or status >= 500:
        kind = {429: "RateLimitError", None: "BatchLineError"}.get(status, "InternalServerError")
        return "retry", kind, None
    return "failure", {400: "BadRequestError", 422: "UnprocessableEntityError"}.get(status, "APIStatusError"), None


def message_of(line: dict) -> str:
    error = line.get("error") or ((line.get("response") or {}).get("body") or {}).get("error") or {}
    status = (line.get("response") or {}).get("status_code")
    return scrub(f"batch line HTTP {status}: {error.get('message', error)}")[:500]


class BatchSender:
    """Sends requests as batches and collects them into the open store; ``run`` returns the ledger and the
    requests left to send online."""

    def __init__(self, client: openai.OpenAI, store: RequestStore, params: BatchParams, settings: EngineSettings,
                 budget: Budget | None = None, scale: float = 0.5):
        self.client, self.store, self.params, self.settings = client, store, params, settings
        self.budget, self.scale = budget, scale  # scale: the batch price's share of the online price
        self.journal = Journal(store.path)
        self.ledger = Ledger()
        self.running: dict[str, Entry] = {}  # intent -> a submitted batch not yet collected
        self.payloads: dict[str, dict[str, dict]] = {}  # intent -> custom_id -> payload
        self.holds: dict[str, tuple[float, int]] = {}  # key -> its budget reservation
        self.leftover: list[TeacherRequest] = []  # to send online (teacher.batch.failed: online)
        self.requests: dict[str, TeacherRequest] = {}
        self.sent: set[str] = set()  # keys counted in requests_sent
        self.bar: tqdm | None = None
        self.done = 0  # requests answered or given up in this run, for the bar

    # -- submitting -----------------------------------------------------------------------------------------
    def submit(self, requests: list[TeacherRequest], round_: int) -> None:
        for part in chunks(self.within_budget(requests), self.params):
            entry = Entry(uuid.uuid4().hex[:16], round_)
            path = input_path(self.store.path, entry.intent)
            with open(private_file(path), "w", encoding="utf-8") as handle:
                handle.writelines(input_line(request) + "\n" for request in part)
                handle.flush()
                os.fsync(handle.fileno())
            fsync_directory(path.parent)
            self.journal.write("intent", entry, requests=len(part))
            self.create(entry, path)
            for request in part:
                if request.key not in self.sent:
                    self.sent.add(request.key)
                    self.ledger.requests_sent += 1
            self.ledger.attempts += len(part)

    def within_budget(self, requests: list[TeacherRequest]) -> list[TeacherRequest]:
        if self.budget is None:
            return requests
        kept = []
        for request in requests:
            reservation = self.budget.hold(request, self.scale)
            if reservation is None:
                self.ledger.skipped_budget += 1
                self.ledger.skipped[request.key] = self.budget.describe()
                self.finish(1)
            else:
                self.holds[request.key] = reservation
                kept.append(request)
        return kept

    def create(self, entry: Entry, path: Path) -> None:
        """Upload and create the batch of ``entry`` (once: a create that errored is looked up before a retry)."""
        self.payloads[entry.intent] = read_input(path)
        with path.open("rb") as handle:
            uploaded = self.client.files.create(file=(path.name, handle), purpose="batch")
        for attempt in range(CREATE_ATTEMPTS):
            try:
                batch = self.client.with_options(max_retries=0).batches.create(
                    input_file_id=uploaded.id, endpoint=ENDPOINT, completion_window=self.params.completion_window,
                    metadata={"distill_intent": entry.intent})
                break
            except (openai.APIConnectionError, openai.InternalServerError, openai.RateLimitError) as error:
                found = self.lookup(entry.intent)  # it may have been created before the connection broke
                if found is not None:
                    batch = found
                    break
                if attempt + 1 == CREATE_ATTEMPTS:
                    raise Fatal(f"the Batch API did not create a batch after {CREATE_ATTEMPTS} attempts: "
                                f"{type(error).__name__}: {error}") from None
                time.sleep(min(self.settings.backoff_max_s, self.settings.backoff_base_s * 2 ** attempt))
        entry.batch_id = batch.id
        self.journal.write("submitted", entry, input_file_id=uploaded.id)
        self.ledger.batches += 1
        self.running[entry.intent] = entry

    def lookup(self, intent: str):
        """The provider's batch created for ``intent`` (its metadata names it), or None."""
        for seen, batch in enumerate(self.client.batches.list(limit=100)):
            if (batch.metadata or {}).get("distill_intent") == intent:
                return batch
            if seen + 1 >= LOOKUP_LIMIT:
                break
        return None

    # -- resuming -------------------------------------------------------------------------------------------
    def resume(self) -> set[str]:
        """Batches an earlier run left open: polled again, or (killed before the id was recorded) found by their
        metadata or else created now. The keys they carry."""
        keys: set[str] = set()
        for entry in self.journal.open_entries():
            path = input_path(self.store.path, entry.intent)
            if entry.batch_id is None:
                found = self.lookup(entry.intent) if path.exists() else None
                if found is not None:
                    entry.batch_id = found.id
                    self.journal.write("submitted", entry, input_file_id=found.input_file_id, found=True)
                elif path.exists():
                    print(f"batch: resubmitting {path.name}, whose creation an earlier run did not finish "
                          "(the provider has no batch for it)", file=sys.stderr)
                    self.create(entry, path)
                    keys |= set(self.payloads[entry.intent])
                    continue
                else:  # the input file never became durable: nothing was uploaded
                    self.journal.write("collected", entry, status="never_submitted")
                    continue
            self.payloads[entry.intent] = read_input(path)
            self.running[entry.intent] = entry
            keys |= set(self.payloads[entry.intent])
            print(f"batch: resuming {entry.batch_id} ({len(self.payloads[entry.intent])} requests) that an earlier "
                  "run submitted; it is polled, not submitted again", file=sys.stderr)
        return keys

    # -- collecting -----------------------------------------------------------------------------------------
    def download(self, file_id: str | None) -> list[dict]:
        if not file_id:
            return []
        text = self.client.files.content(file_id).text
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def collect(self, entry: Entry, batch) -> list[TeacherRequest]:
        """Store a finished batch's answers; the requests to retry in a next batch."""
        payloads = self.payloads[entry.intent]
        if batch.status == "failed":  # the provider refused the file itself: no line of it can succeed
            errors = "; ".join(f"line {e.line}: {e.message}" for e in (batch.errors.data if batch.errors else [])[:5])
            self.journal.write("collected", entry, status="failed")
            raise Fatal(f"the Batch API refused batch {batch.id}: {errors or 'no reason given'}")
        retry: list[TeacherRequest] = []
        seen: set[str] = set()
        answered = self.ledger.batch_answers
        for line in self.download(batch.output_file_id) + self.download(batch.error_file_id):
            key = line.get("custom_id")
            if key not in payloads or key in seen:
                continue
            seen.add(key)
            outcome, kind, answer = classify(line)
            if outcome == "answer":
                self.answer(key, payloads[key], answer)
            elif outcome == "retry" and key not in self.store:
                retry.append(self.request_for(key, payloads[key]))
                self.ledger.errors[key] = message_of(line)
                self.ledger.retries[kind] += 1
            elif key not in self.store:
                self.give_up(key, kind, message_of(line))
        for key in payloads.keys() - seen - set(self.store_keys(payloads)):  # a line the provider never returned
            retry.append(self.request_for(key, payloads[key]))
            self.ledger.retries["BatchLineMissing"] += 1
        self.store.sync()  # the answers are durable before the journal says the batch is collected
        self.journal.write("collected", entry, status=batch.status, answered=self.ledger.batch_answers - answered,
                           retried=len(retry))
        input_path(self.store.path, entry.intent).unlink(missing_ok=True)
        del self.running[entry.intent]
        return retry

    def store_keys(self, payloads: dict[str, dict]) -> list[str]:
        return [key for key in payloads if key in self.store]

    def request_for(self, key: str, payload: dict) -> TeacherRequest:
        if key in self.requests:
            return self.requests[key]
        body = {name: value for name, value in payload.items() if name not in ("model", "messages")}
        return TeacherRequest(key=key, model=payload["model"], messages=payload["messages"], sampling=body)

    def answer(self, key: str, payload: dict, answer: dict) -> None:
        if key in self.store:  # collected before a kill stopped the journal line: stored once only
            return
        self.store.put(key, payload, answer)
        usage = answer.get("usage") or {}
        for name in ("prompt_tokens", "completion_tokens"):
            setattr(self.ledger, name, getattr(self.ledger, name) + usage.get(name, 0))
            setattr(self.ledger, f"batch_{name}", getattr(self.ledger, f"batch_{name}") + usage.get(name, 0))
        self.ledger.batch_answers += 1
        self.ledger.errors.pop(key, None)
        self.settle(key, usage)
        self.finish(1)

    def give_up(self, key: str, kind: str, message: str) -> None:
        self.ledger.failures[kind] += 1
        self.ledger.errors[key] = message
        self.settle(key, None)
        self.finish(1)

    def settle(self, key: str, usage: dict | None) -> None:
        reservation = self.holds.pop(key, None)
        if reservation is not None:
            self.budget.settle_held(reservation, usage, self.scale)

    def finish(self, count: int) -> None:
        self.done += count
        self.show()

    def show(self, running: int = 0, states: str = "") -> None:
        """The bar at the requests ended in this run plus the lines the running batches have done (``running``)."""
        if self.bar is not None:
            self.bar.update(max(0, min(self.bar.total, self.done + running) - self.bar.n))  # update: paced output
            if states:
                self.bar.set_postfix_str(states, refresh=False)

    # -- the whole plan -------------------------------------------------------------------------------------
    def run(self, requests: list[TeacherRequest]) -> tuple[Ledger, list[TeacherRequest]]:
        """Send, poll and collect; an error of the client's that ends the run (a bad key, a dropped connection after
        its retries) ends it as one ``Fatal`` whose message is scrubbed of the key the server may echo."""
        try:
            return self._run(requests)
        except openai.APIError as error:
            raise Fatal(f"the Batch API failed: {type(error).__name__}: {error}") from None

    def _run(self, requests: list[TeacherRequest]) -> tuple[Ledger, list[TeacherRequest]]:
        self.requests = {request.key: request for request in requests}
        in_flight = self.resume()
        pending = [r for r in self.requests.values() if r.key not in self.store and r.key not in in_flight]
        self.ledger.cache_hits = sum(1 for r in self.requests.values() if r.key in self.store)
        total = len(pending) + len(in_flight)
        with tqdm(total=total, unit="req", desc="teacher (batch)", file=sys.stderr, mininterval=1.0) as self.bar:
            if pending:
                self.submit(pending, 1)
            wait = self.settings.batch_poll_s
            while self.running:
                time.sleep(wait)
                wait = min(wait * 1.5, self.settings.batch_poll_max_s)
                self.poll()
        self.bar = None
        return self.ledger, self.leftover

    def poll(self) -> None:
        """One look at every running batch: show their progress; collect the ended ones, resubmit their retries."""
        progress, states = 0, []
        for entry in list(self.running.values()):
            batch = self.client.batches.retrieve(entry.batch_id)
            counts = batch.request_counts
            if batch.status not in TERMINAL:
                progress += (counts.completed + counts.failed) if counts else 0
                states.append(f"{batch.status} {counts.completed if counts else 0}/{counts.total if counts else '?'}")
                continue
            retry = self.collect(entry, batch)
            if not retry:
                continue
            if self.params.failed == "batch" and entry.round < self.params.rounds:
                self.submit(retry, entry.round + 1)
            elif self.params.failed == "online":
                self.leftover += retry
                self.finish(len(retry))
                for request in retry:
                    self.settle(request.key, None)
            else:
                for request in retry:
                    kind = "BatchRoundsExhausted"
                    self.give_up(request.key, kind, f"{kind} after {entry.round} batches: "
                                 f"{self.ledger.errors.get(request.key, '')}"[:500])
        self.show(progress, ", ".join(states[:3]) + (" ..." if len(states) > 3 else ""))


def batch_client(base_url: str, api_key: str, settings: EngineSettings) -> openai.OpenAI:
    """The official client for files and batches. Its own retries are on for reads and uploads (none of them is
    billed); creating a batch is guarded by the lookup in ``BatchSender.create``, since a retried create would
    pay twice."""
    remember(api_key)
    return openai.OpenAI(base_url=base_url, api_key=api_key, timeout=settings.timeout_s, max_retries=3)


def export_requests(requests: list[TeacherRequest], path: Path) -> int:
    """Write ``requests`` as one Batch API input file (0600: it holds every prompt), e.g. for ``vllm run-batch -i``;
    how many lines."""
    unique = list({request.key: request for request in requests}.values())
    with open(private_file(path), "w", encoding="utf-8") as handle:
        handle.writelines(input_line(request) + "\n" for request in unique)
    return len(unique)


def import_output(output: Path, batch_input: Path, store: RequestStore) -> Counter:
    """Store the answers of a Batch API output file (``vllm run-batch -o``, or a provider's output file) whose
    ``custom_id`` is a line of ``batch_input``; counts of ``stored``, ``already_stored``, ``failed`` and
    ``unknown`` (ids that are not in the input file)."""
    payloads = read_input(batch_input)
    counts: Counter = Counter()
    with output.open(encoding="utf-8") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
            except ValueError:
                raise ValueError(f"{output}:{number}: not a JSON line of a batch output file") from None
            key = line.get("custom_id")
            outcome, _, answer = classify(line)
            if key not in payloads:
                counts["unknown"] += 1
            elif outcome != "answer":
                counts["failed"] += 1
            elif key in store:
                counts["already_stored"] += 1
            else:
                store.put(key, payloads[key], answer)
                counts["stored"] += 1
    store.sync()
    return counts
