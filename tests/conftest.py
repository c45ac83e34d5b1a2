"""Test-session environment: no analytics, no hub, a private Prefect home."""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="prefect-home-"))


@pytest.fixture
def forty_seeds(tmp_path: Path) -> Path:
    """Forty demo seeds (reverse and upper of twenty words) as an ingest parquet file."""
    from stages.io import write_parquet
    from tests.test_generate import WORDS, seeds

    path = tmp_path / "ingest" / "train.parquet"
    write_parquet(seeds([f"{op} {word}" for word in WORDS for op in ("reverse", "upper")]), path)
    return path


@pytest.fixture(scope="module")
def serve() -> Iterator[Callable[..., str]]:
    """``serve(**rates)`` -> base URL of a stand-in with those settings, started once per test module."""
    from stages.params import StandinParams
    from stages.teachers.standin import running_standin

    with ExitStack() as stack:
        urls: dict[tuple, str] = {}

        def url_for(**rates: float) -> str:
            key = tuple(sorted(rates.items()))
            if key not in urls:
                urls[key] = stack.enter_context(running_standin(StandinParams(**rates)))
            return urls[key]

        yield url_for


def billed_requests(request_log: Path) -> Counter:
    """Requests a stand-in answered and billed, by request hash, from its ``--request-log`` (replays of an
    Idempotency-Key and faults are not billed)."""
    records = [json.loads(line) for line in request_log.read_text().splitlines()]
    return Counter(r["request_hash"] for r in records if r["status"] == 200 and r["fault"] is None)


@pytest.fixture
def billed() -> Callable[[Path], Counter]:
    """``billed(request_log)``: the stand-in's billed requests by request hash (see billed_requests)."""
    return billed_requests

