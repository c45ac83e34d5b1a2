"""A local Hugging Face teacher (``teacher.provider: hf``): micro-batched generation, OpenAI-shaped
answers with top-k log-probs, and the generate stage end to end through the engine and the store."""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
import time
from pathlib import Path

import polars as pl
import pytest
from tokenizers import Tokenizer

from distill import params as params_module
from distill.io import write_parquet
from distill.teacher import capabilities, hf_local
from distill.teacher.endpoint import hf_url, teacher_endpoint, teacher_identity
from distill.teacher.hf_local import HFTransport, parse_url
from distill.teacher.transports import make_transport

REPO = Path(__file__).resolve().parents[1]
TINY_CHAR = REPO / "data/students/tiny-char"


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A config-only teacher: tiny-char's tokenizer, 1 layer, 32 wide."""
    from transformers import LlamaConfig

    folder = tmp_path_factory.mktemp("hf-teacher")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(TINY_CHAR / name, folder / name)
    config = LlamaConfig.from_pretrained(TINY_CHAR)
    config.hidden_size, config.intermediate_size, config.head_dim = 32, 64, 16
    config.num_hidden_layers, config.num_attention_heads, config.num_key_value_heads = 1, 2, 2
    config.save_pretrained(folder)
    return folder


def payload(text: str, **sampling: object) -> dict:
    messages = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": text}]
    return {"model": "tiny", "messages": messages, "temperature": 0.0, "max_tokens": 6, "n": 1, "seed": 0} | sampling


def complete_all(transport: HFTransport, payloads: list[dict]) -> list[dict]:
    async def go() -> list[dict]:
        async with transport:
            return await asyncio.gather(*(transport.complete(p) for p in payloads))

    return asyncio.run(go())


def test_concurrent_requests_run_as_one_batch(teacher_dir: Path, seed_words) -> None:
    transport = HFTransport(str(teacher_dir), batch_size=16, max_wait_ms=200)
    answers = complete_all(transport, [payload(f"reverse {word}") for word in seed_words[:5]])
    assert transport.batch_sizes == [5]
    for answer in answers:
        assert answer["object"] == "chat.completion" and answer["id"] and answer["model"] == "tiny"
        (choice,) = answer["choices"]
        assert isinstance(choice["message"]["content"], str) and choice["index"] == 0
        assert choice["finish_reason"] in ("stop", "length")
        usage = answer["usage"]
        assert usage["prompt_tokens"] > 0 and 0 < usage["completion_tokens"] <= 6
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        if choice["finish_reason"] == "length":
            assert usage["completion_tokens"] == 6
    # the char tokenizer counts one token per character of the prompt (system + "\n" + user)
    assert answers[0]["usage"]["prompt_tokens"] == len("Answer briefly.\nreverse " + seed_words[0])


def test_batch_size_caps_a_batch(teacher_dir: Path, seed_words) -> None:
    transport = HFTransport(str(teacher_dir), batch_size=2, max_wait_ms=200)
    complete_all(transport, [payload(f"upper {word}") for word in seed_words[:5]])
    assert transport.batch_sizes == [2, 2, 1]


def test_same_payload_and_seed_give_the_same_answer(teacher_dir: Path) -> None:
    sampled = [payload("reverse planet", temperature=1.0, seed=s, max_tokens=12) for s in (7, 7, 8)]
    first = [complete_all(HFTransport(str(teacher_dir), max_wait_ms=0), [p])[0] for p in sampled]
    texts = [answer["choices"][0]["message"]["content"] for answer in first]
    assert texts[0] == texts[1]
    greedy = complete_all(HFTransport(str(teacher_dir)), [payload("upper cat"), payload("upper cat")])
    assert greedy[0]["choices"] == greedy[1]["choices"]


def test_top_logprobs_alternatives_per_token(teacher_dir: Path) -> None:
    (answer,) = complete_all(HFTransport(str(teacher_dir)), [payload("reverse stone", logprobs=True, top_logprobs=5)])
    choice = answer["choices"][0]
    content = choice["logprobs"]["content"]
    assert len(content) == answer["usage"]["completion_tokens"] - (choice["finish_reason"] == "stop")
    char = Tokenizer.from_file(str(teacher_dir / "tokenizer.json"))
    assert char.decode([char.token_to_id(item["token"]) for item in content]) == choice["message"]["content"]
    for item in content:
        assert len(item["top_logprobs"]) == 5
        assert item["logprob"] <= 0 and all(alt["logprob"] <= 0 for alt in item["top_logprobs"])
        assert item["top_logprobs"][0]["token"] == item["token"]  # greedy: the chosen token is the argmax
        assert item["top_logprobs"][0]["logprob"] == pytest.approx(item["logprob"])
        values = [alt["logprob"] for alt in item["top_logprobs"]]
        assert values == sorted(values, reverse=True)
        assert item["bytes"] == list(item["token"].encode())


def test_n_answers_per_request(teacher_dir: Path) -> None:
    (answer,) = complete_all(HFTransport(str(teacher_dir)), [payload("upper cat", n=3, temperature=1.0)])
    assert [choice["index"] for choice in answer["choices"]] == [0, 1, 2]


def test_full_batches_go_at_once_all_on_one_thread(teacher_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full batch does not wait for the timer, and every generate, from any event loop, runs on the one torch
    thread (a second thread calling torch gets an OpenMP pool of its own, which slows every op)."""
    threads = []

    def recorded(*args: object) -> list[dict]:
        threads.append(threading.get_ident())
        return generate(*args)

    generate = hf_local.generate_batch
    monkeypatch.setattr(hf_local, "generate_batch", recorded)
    started = time.perf_counter()
    for words in (["cat", "dog", "sun", "sea"], ["red", "big"]):
        transport = HFTransport(str(teacher_dir), batch_size=2, max_wait_ms=60_000)  # the timer never fires
        answers = complete_all(transport, [payload(f"upper {word}") for word in words])
        assert transport.batch_sizes == [2] * (len(words) // 2) and all(answer["choices"] for answer in answers)
    assert time.perf_counter() - started < 30 and len(threads) == 3 and len(set(threads)) == 1
    assert threads[0] != threading.get_ident()  # off the event loop


@pytest.fixture
def hf_params(load_params):
    """``hf_params(teacher_dir, **generate_updates)``: load_params with the local HF teacher in that folder."""

    def params_with(teacher_dir: Path, **generate_updates: object) -> params_module.Params:
        params = load_params(**generate_updates)
        teacher = params.teacher.model_copy(update={"name": "tiny-hf", "provider": "hf", "model": str(teacher_dir),
                                                    "base_url": None})
        return params.model_copy(update={"teacher": teacher})

    return params_with


def test_hf_endpoint_url_identity_and_capabilities(teacher_dir: Path, hf_params, load_params) -> None:
    params = hf_params(teacher_dir)
    with teacher_endpoint(params.teacher) as (base_url, api_key_env):
        assert base_url == hf_url(params.teacher) and base_url.startswith("hf://") and api_key_env is None
    assert parse_url(base_url) == {"model": str(teacher_dir), "batch_size": 16, "max_wait_ms": 20.0, "seed": 0,
                                   "device": "auto"}
    assert isinstance(make_transport("openai", base_url, "unused", 60.0), HFTransport)
    assert capabilities.of(params.teacher) == capabilities.HF
    reseeded = params.teacher.model_copy(update={"hf": params.teacher.hf.model_copy(update={"seed": 1})})
    assert teacher_identity(reseeded) != teacher_identity(params.teacher)
    faster = params.teacher.model_copy(update={"hf": params.teacher.hf.model_copy(update={"batch_size": 4})})
    assert teacher_identity(faster) == teacher_identity(params.teacher)  # throughput is not identity
    default = load_params().teacher
    assert default.provider == "standin" and teacher_identity(default).startswith("standin:standin:")


def test_generate_end_to_end_with_features(
    teacher_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    hf_params,
    seeds,
    seed_words,
    run_stage,
) -> None:
    params = hf_params(teacher_dir, top_logprobs=5, feature_tokenizer=str(teacher_dir), max_tokens=8, shards=2)
    seeds_path = tmp_path / "ingest/train.parquet"
    write_parquet(seeds([f"reverse {word}" for word in seed_words[:8]]), seeds_path)
    metrics = run_stage(params, tmp_path, seeds_path)
    assert metrics["requests_sent"] == 8 and metrics["rows"] == 8 and metrics["feature_rows"] == 8
    rows = pl.read_parquet(tmp_path / "gen/rows.parquet")
    features = pl.read_parquet(tmp_path / "gen/features.parquet")
    assert set(rows["teacher"]) == {"tiny-hf"} and set(features["k"]) == {5}
    char = Tokenizer.from_file(str(teacher_dir / "tokenizer.json"))
    for row in rows.join(features, on="id").iter_rows(named=True):
        assert char.decode(row["token_ids"]).strip() == row["response"]
        assert row["top_ids"][::5] == row["token_ids"]
    stored = [json.loads(line) for line in (tmp_path / "store/generate.jsonl").read_text().splitlines()]
    assert len(stored) == 8 and all(entry["response"]["choices"][0]["logprobs"]["content"] for entry in stored)
    again = run_stage(params, tmp_path, seeds_path)
    assert again["requests_sent"] == 0 and again["cache_hits"] == 8 and again["rows"] == 8
