"""What a batch of teacher requests will cost, before anything is sent.

Counts the requests the store already answers (free) and the unique ones still to send,
and prices the rest with ``teacher.price``. Prompt tokens are counted with ``teacher.tokenizer``
when it is set (exact for a server that uses it, distill/teacher/tokens.py), else characters
divided by ``chars_per_token``: about 4 for the BPE tokenisers of real endpoints, but 1 for the
offline stand-in, whose ``usage`` counts one token per character; the table then says the count
is approximate, and by how much the probe found it off. Completion tokens have two figures:

- an upper bound, max_tokens x n per request (what the budget reserves);
- an expected value: the mean completion tokens per answer already observed in the store,
  else ``expected_completion_tokens`` from params, else the upper bound. Answers are
  usually much shorter than max_tokens, so the upper bound alone overestimates.
"""

from __future__ import annotations

from dataclasses import dataclass

from distill.params import PriceParams, TeacherParams
from distill.teacher import providers
from distill.teacher.engine import TeacherRequest, cost_usd
from distill.teacher.store import RequestStore


def price_of(teacher: TeacherParams) -> PriceParams:
    """What the teacher's requests are priced at: its prices, or the Batch API's share of them (teacher.batch)."""
    return teacher.price.at_batch_price() if teacher.batch.enabled else teacher.price


def chars_per_token(teacher: TeacherParams) -> float:
    """4.0 for a real endpoint, 1.0 for a local HF teacher (an upper bound whatever its tokenizer, usually
    free anyway), a plugin's own figure (the stand-in bills one token per character)."""
    if providers.is_plugin(teacher.provider):
        return providers.plugin(teacher.provider).CHARS_PER_TOKEN
    return 1.0 if teacher.provider == "hf" else 4.0


@dataclass(frozen=True)
class Estimate:
    planned: int  # requests in the plan
    cached: int  # requests the store already answers
    to_send: int  # unique requests not in the store
    prompt_tokens: int
    completion_tokens_expected: int
    completion_tokens_max: int
    cost_usd_expected: float
    cost_usd_max: float
    completion_source: str  # where the expected completion length came from
    prompt_source: str = ""  # how prompt tokens were counted (a tokenizer, or characters: approximate)

    def table(self, label: str = "teacher") -> str:
        rows = [
            ("requests planned", f"{self.planned}", ""),
            ("cached (in the store)", f"{self.cached}", ""),
            ("to send", f"{self.to_send}", ""),
            ("prompt tokens", f"{self.prompt_tokens}", f"{self.prompt_tokens}"),
            ("completion tokens", f"{self.completion_tokens_expected}", f"{self.completion_tokens_max}"),
            ("dollars", f"{self.cost_usd_expected:.4f}", f"{self.cost_usd_max:.4f}"),
        ]
        lines = [f"{label + ': cost estimate':<28}{'expected':>12}{'upper bound':>14}"]
        lines += [f"  {name:<26}{expected:>12}{bound:>14}" for name, expected, bound in rows]
        lines.append(f"  (expected completion: {self.completion_source})")
        if self.prompt_source:
            lines.append(f"  ({self.prompt_source})")
        return "\n".join(lines)


def observed_completion_per_answer(store: RequestStore) -> float | None:
    """Mean completion tokens per answer (choice) over the store's entries; None if empty."""
    tokens = answers = 0
    for entry in store.entries():
        response = entry["response"]
        tokens += (response.get("usage") or {}).get("completion_tokens", 0)
        answers += len(response.get("choices") or [])
    return tokens / answers if answers else None


def estimate(
    requests: list[TeacherRequest],
    store: RequestStore,
    price: PriceParams,
    chars_per_token: float = 4.0,
    expected_completion_tokens: int | None = None,
    prompt_source: str = "",
) -> Estimate:
    """Price the requests not yet in ``store``; reads the store, sends nothing."""
    cached = sum(request.key in store for request in requests)
    pending = {request.key: request for request in requests if request.key not in store}
    observed = observed_completion_per_answer(store)
    if observed is not None:
        per_answer, source = observed, f"{observed:.2f} tokens per answer observed in the store"
    elif expected_completion_tokens is not None:
        per_answer, source = float(expected_completion_tokens), "expected_completion_tokens from params"
    else:
        per_answer, source = None, "max_tokens x n (nothing observed yet)"
    prompt = most = 0
    expected_sum = 0.0
    for request in pending.values():
        prompt += request.prompt_estimate(chars_per_token)
        limit = request.completion_limit()
        most += limit
        n = int(request.sampling.get("n") or 1)
        expected_sum += limit if per_answer is None else min(limit, per_answer * n)
    expected = round(expected_sum)
    return Estimate(
        planned=len(requests), cached=cached, to_send=len(pending), prompt_tokens=prompt,
        completion_tokens_expected=expected, completion_tokens_max=most,
        cost_usd_expected=cost_usd(prompt, expected, price), cost_usd_max=cost_usd(prompt, most, price),
        completion_source=source, prompt_source=prompt_source,
    )
