"""The stand-in's Batch API: ``/v1/files`` and ``/v1/batches`` as OpenAI serves them (the objects the official
client parses), each line answered as ``/v1/chat/completions`` would answer it, with the same faults (a failed
line, in the error file) and the same request log (``batch`` names the batch; billed when status 200).

A batch validates for ``batch_delay_ms``, then runs its lines ``batch_line_ms`` apart, then writes its output
and error files. Kept in memory: the server outlives the runs that submit to it (a test kills one mid-batch and
a re-run must find the batch, not submit it again).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from demo.standin import Standin

ENDPOINT = "/v1/chat/completions"


def error(message: str, status: int = 400, param: str | None = None) -> web.Response:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": None}}
    return web.json_response(body, status=status)


class Batches:
    def __init__(self, standin: Standin) -> None:
        self.standin = standin
        self.files: dict[str, tuple[dict, bytes]] = {}  # id -> (file object, content)
        self.batches: dict[str, dict] = {}  # id -> batch object, in creation order
        self.tasks: set[asyncio.Task] = set()  # running batches (kept so they are not garbage collected)

    def new_file(self, name: str, purpose: str, content: bytes) -> dict:
        meta = {"id": f"file-{uuid.uuid4().hex[:24]}", "object": "file", "bytes": len(content),
                "created_at": int(time.time()), "filename": name, "purpose": purpose, "status": "processed"}
        self.files[meta["id"]] = (meta, content)
        return meta

    async def upload(self, request: web.Request) -> web.Response:
        form = await request.post()
        upload, purpose = form.get("file"), form.get("purpose")
        if not isinstance(upload, web.FileField) or purpose not in ("batch", "batch_output"):
            return error("A multipart body with `file` and `purpose: batch` is required.", param="file")
        return web.json_response(self.new_file(upload.filename, str(purpose), upload.file.read()))

    async def file(self, request: web.Request) -> web.Response:
        if request.match_info["id"] not in self.files:
            return error(f"No such File object: {request.match_info['id']}", 404, "id")
        return web.json_response(self.files[request.match_info["id"]][0])

    async def content(self, request: web.Request) -> web.Response:
        if request.match_info["id"] not in self.files:
            return error(f"No such File object: {request.match_info['id']}", 404, "id")
        return web.Response(body=self.files[request.match_info["id"]][1], content_type="application/jsonl")

    async def create(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("input_file_id") not in self.files:
            return error(f"No such File object: {body.get('input_file_id')}", 404, "input_file_id")
        if body.get("endpoint") != ENDPOINT or body.get("completion_window") != "24h":
            return error(f"This stand-in runs batches of {ENDPOINT} with completion_window 24h.", param="endpoint")
        now = int(time.time())
        batch = {"id": f"batch_{uuid.uuid4().hex[:24]}", "object": "batch", "endpoint": ENDPOINT, "errors": None,
                 "input_file_id": body["input_file_id"], "completion_window": "24h", "status": "validating",
                 "output_file_id": None, "error_file_id": None, "created_at": now, "in_progress_at": None,
                 "expires_at": now + 86400, "finalizing_at": None, "completed_at": None, "failed_at": None,
                 "expired_at": None, "cancelling_at": None, "cancelled_at": None,
                 "request_counts": {"total": 0, "completed": 0, "failed": 0}, "metadata": body.get("metadata")}
        self.batches[batch["id"]] = batch
        task = asyncio.create_task(self.run(batch))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return web.json_response(batch)

    async def retrieve(self, request: web.Request) -> web.Response:
        batch = self.batches.get(request.match_info["id"])
        return web.json_response(batch) if batch else error(f"No such Batch: {request.match_info['id']}", 404, "id")

    async def listing(self, request: web.Request) -> web.Response:
        newest = list(reversed(self.batches.values()))
        after = request.query.get("after")
        if after in self.batches:
            newest = newest[[b["id"] for b in newest].index(after) + 1:]
        limit = int(request.query.get("limit", 20))
        page = newest[:limit]
        return web.json_response({"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
                                  "last_id": page[-1]["id"] if page else None, "has_more": len(newest) > limit})

    async def cancel(self, request: web.Request) -> web.Response:
        batch = self.batches.get(request.match_info["id"])
        if batch is None:
            return error(f"No such Batch: {request.match_info['id']}", 404, "id")
        if batch["status"] in ("validating", "in_progress"):
            batch["status"], batch["cancelling_at"] = "cancelling", int(time.time())
        return web.json_response(batch)

    async def run(self, batch: dict) -> None:
        config = self.standin.config
        await asyncio.sleep(config.batch_delay_ms / 1000)
        lines, problems = [], []
        for number, raw in enumerate(self.files[batch["input_file_id"]][1].decode("utf-8").splitlines(), start=1):
            try:
                line = json.loads(raw)
                if line.get("url") != ENDPOINT or not isinstance(line.get("custom_id"), str):
                    raise ValueError(f"each line needs a custom_id and url {ENDPOINT}")
                lines.append(line)
            except (ValueError, AttributeError) as reason:
                problems.append({"code": "invalid_json_line", "message": str(reason), "param": None, "line": number})
        if problems or not lines:  # OpenAI refuses the whole file when a line is malformed
            batch["errors"] = {"object": "list", "data": problems or [{"code": "empty_file", "message": "no lines",
                                                                       "param": None, "line": None}]}
            batch["status"], batch["failed_at"] = "failed", int(time.time())
            return
        batch["status"], batch["in_progress_at"] = "in_progress", int(time.time())
        batch["request_counts"]["total"] = len(lines)
        output, errors = [], []
        for line in lines:
            if batch["status"] == "cancelling":
                errors.append(self.line(line, None, {"code": "batch_cancelled", "message": "The batch was cancelled."}))
                continue
            await asyncio.sleep(config.batch_line_ms / 1000)
            status, body = self.standin.batch_line(line.get("body"), batch["id"])
            (output if status == 200 else errors).append(self.line(line, {"status_code": status, "body": body}))
            batch["request_counts"]["completed" if status == 200 else "failed"] += 1
        batch["status"], batch["finalizing_at"] = "finalizing", int(time.time())
        for name, kept in (("output_file_id", output), ("error_file_id", errors)):
            if kept:
                content = "".join(json.dumps(item) + "\n" for item in kept).encode()
                batch[name] = self.new_file(f"{batch['id']}_{name[:-8]}.jsonl", "batch_output", content)["id"]
        cancelled = batch["status"] == "cancelling" or batch["cancelling_at"] is not None
        batch["status"] = "cancelled" if cancelled else "completed"
        batch["cancelled_at" if cancelled else "completed_at"] = int(time.time())

    @staticmethod
    def line(line: dict, response: dict | None, failure: dict | None = None) -> dict[str, Any]:
        return {"id": f"batch_req_{uuid.uuid4().hex[:24]}", "custom_id": line["custom_id"],
                "response": response and response | {"request_id": f"req_{uuid.uuid4().hex[:24]}"}, "error": failure}


def add_routes(app: web.Application, standin: Standin) -> None:
    batches = Batches(standin)
    app.router.add_post("/v1/files", batches.upload)
    app.router.add_get("/v1/files/{id}", batches.file)
    app.router.add_get("/v1/files/{id}/content", batches.content)
    app.router.add_post("/v1/batches", batches.create)
    app.router.add_get("/v1/batches", batches.listing)
    app.router.add_get("/v1/batches/{id}", batches.retrieve)
    app.router.add_post("/v1/batches/{id}/cancel", batches.cancel)
