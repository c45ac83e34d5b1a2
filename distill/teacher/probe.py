"""Probes before paying: what a teacher endpoint really does, found out with two tiny requests.

Servers differ from the OpenAI API in silence: ``transformers serve`` ignores ``logprobs``, some servers ignore
``n`` or ``seed``, reasoning models (OpenAI o-series, GPT-5) refuse ``max_tokens`` and want
``max_completion_tokens``. Declared capabilities (``teacher.capabilities``) catch a plan the params already say
cannot be served; the probe catches what only the endpoint can say, before the first paid request of a plan:

1. a tiny request with what the plan needs (``logprobs``/``top_logprobs``, ``n`` = 2, a ``seed``, the teacher's
   ``reasoning_effort``) and the completion limit in ``max_tokens``; refused for naming ``max_tokens``, it is sent
   again with ``max_completion_tokens`` (``teacher.completion_limit: auto``), and that field is used from then on;
2. the same request again: equal answers mean the seed is honoured.

The probe is paid on every run that has something to send (a few dozen tokens; it counts against the budget);
its answers are not training data and stay out of the request store. The result (``Probe``) is recorded in
the stage's metrics; ``refusal`` says why a plan cannot be served, with the probe's evidence, and the plan
is then refused before anything of it is paid. For the feature method the probe's token strings are mapped
onto the student's tokenizer, so a mismatch is found before paying too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from distill.params import TeacherParams
from distill.teacher.engine import TeacherRequest, checked, cost_usd
from distill.teacher.transports import Fatal, Rejected, Transient, make_transport

PROBE_MESSAGES = [{"role": "user", "content": "Reply with one short sentence about the sea."}]
PROBE_LIMIT = 16  # completion tokens per probe answer: enough for a few tokens of log-probs, cheap
PROBE_SEED = 1234
PROBE_ATTEMPTS = 4  # a probe that meets only transient errors is inconclusive: the plan goes on, unchecked
LIMIT_FIELDS = ("max_tokens", "max_completion_tokens")


@dataclass
class Probe:
    """What the endpoint did with each setting the plan needs; None where the plan did not need it."""

    teacher: str
    needs: dict = field(default_factory=dict)  # what it asked for: logprobs (top_logprobs k), n
    limit_field: str = "max_tokens"  # the field the completion limit goes in from now on
    logprobs: bool | None = None  # returned choices[].logprobs.content when asked
    top_logprobs: int | None = None  # alternatives per position it returned (asked: the plan's k)
    n: bool | None = None  # returned two choices for n = 2
    seed: bool | None = None  # two equal seeded requests got equal answers
    reasoning: str = "none"  # where it put its reasoning: field (reasoning_content), inline (<think>) or none
    prompt_tokens: int | None = None  # the endpoint's count of the probe's prompt (usage)
    estimated_prompt_tokens: int | None = None  # this run's estimate of the same prompt
    estimate_source: str = ""  # teacher.tokenizer, or characters / chars_per_token
    tokens: list[str] = field(default_factory=list)  # the answer's token strings (from its log-probs)
    unmapped_tokens: list[str] = field(default_factory=list)  # of those, the ones the student's tokenizer lacks
    cost_usd: float = 0.0  # what the probe's answers cost (counted against the budget)
    tokens_billed: int = 0  # their prompt + completion tokens
    requests_sent: int = 0
    inconclusive: str | None = None  # why nothing could be found out (transient errors only): the plan goes on
    evidence: dict[str, str] = field(default_factory=dict)  # per finding: what was sent and what came back

    def metrics(self) -> dict:
        return {name: value for name, value in asdict(self).items() if name != "tokens"}


class ProbeFailed(Exception):
    """The probe itself was refused for a reason other than the limit's field; the message is the server's."""


def probe_sampling(needs: dict, limit_field: str, reasoning_effort: str | None) -> dict:
    sampling = {"temperature": 1.0, limit_field: PROBE_LIMIT, "seed": PROBE_SEED, "n": 2 if needs.get("n") else 1}
    if needs.get("logprobs"):
        sampling |= {"logprobs": True, "top_logprobs": needs["top_logprobs"]}
    if reasoning_effort is not None:
        sampling["reasoning_effort"] = reasoning_effort
    return sampling


def needs_of(requests: list[TeacherRequest]) -> dict:
    """What a plan asks of the endpoint: log-probs (and how many alternatives), several answers per request."""
    top = max((int(r.sampling.get("top_logprobs") or 0) for r in requests if r.sampling.get("logprobs")), default=None)
    return {"logprobs": top is not None, "top_logprobs": top,
            "n": any(int(r.sampling.get("n") or 1) > 1 for r in requests)}


def covers(asked: dict, needs: dict) -> bool:
    """A probe that asked for ``asked`` found out all that ``needs`` needs."""
    return ((not needs["logprobs"] or (asked.get("logprobs") and asked["top_logprobs"] >= needs["top_logprobs"]))
            and (not needs["n"] or asked.get("n")))


def names_limit(message: str) -> bool:
    """A refusal that is about the completion limit's field (OpenAI: "Unsupported parameter: 'max_tokens' ...
    Use 'max_completion_tokens' instead")."""
    return "max_tokens" in message or "max_completion_tokens" in message


async def ask_twice(transport, model: str, sampling: dict, sent: list) -> list[dict]:
    """The probe request, twice. The two differ only in ``user`` (metadata that never changes an answer), so a
    server's logs, caches and idempotency see two requests."""
    answers = []
    for attempt in (1, 2):
        payload = {"model": model, "messages": PROBE_MESSAGES, **sampling, "user": f"distill-probe-{attempt}"}
        for retry in range(PROBE_ATTEMPTS):
            try:
                answer = checked(await transport.complete(payload))  # as the engine checks answers
                break
            except Transient:
                if retry + 1 == PROBE_ATTEMPTS:
                    raise
                await asyncio.sleep(0.25 * 2**retry)
        sent.append(answer)
        answers.append(answer)
    return answers


def observe(result: Probe, answers: list[dict], needs: dict, sampling: dict) -> None:
    first, second = answers
    choices = first.get("choices") or [{}]
    message = choices[0].get("message") or {}
    content = message.get("content") if isinstance(message.get("content"), str) else ""
    if any(isinstance(message.get(name), str) and message[name].strip() for name in ("reasoning_content", "reasoning")):
        result.reasoning = "field"
    elif content.lstrip().startswith("<think>"):
        result.reasoning = "inline"
    if needs.get("logprobs"):
        positions = (choices[0].get("logprobs") or {}).get("content") or []
        result.logprobs = bool(positions)
        result.top_logprobs = max((len(p.get("top_logprobs") or []) for p in positions), default=0)
        result.tokens = [p.get("token", "") for p in positions]
        result.evidence["logprobs"] = (
            f"asked logprobs=true, top_logprobs={sampling['top_logprobs']}; choices[0].logprobs was "
            + (f"{len(positions)} positions with up to {result.top_logprobs} alternatives" if positions
               else repr(choices[0].get("logprobs"))))
    if needs.get("n"):
        result.n = len(first.get("choices") or []) >= 2
        result.evidence["n"] = f"asked n=2; got {len(first.get('choices') or [])} choice(s)"
    texts = [[(c.get("message") or {}).get("content") for c in answer.get("choices") or []] for answer in answers]
    result.seed = texts[0] == texts[1]
    result.evidence["seed"] = (f"two requests with seed={PROBE_SEED} at temperature 1 gave "
                               + ("equal answers" if result.seed else "different answers"))
    result.prompt_tokens = (first.get("usage") or {}).get("prompt_tokens")
    result.evidence["answer"] = f"id {first.get('id', '')!r}, model {first.get('model', '')!r}"


async def run_probe(teacher: TeacherParams, base_url: str, api_key: str, timeout_s: float, needs: dict
                    ) -> tuple[Probe, list[dict]]:
    """Send the probe; the findings and the answers received (for the bill)."""
    result, sent = Probe(teacher.name), []
    fields = LIMIT_FIELDS if teacher.completion_limit == "auto" else (teacher.completion_limit,)
    async with make_transport("openai", base_url, api_key, timeout_s) as transport:
        for position, limit_field in enumerate(fields):
            sampling = probe_sampling(needs, limit_field, teacher.reasoning_effort)
            try:
                answers = await ask_twice(transport, teacher.model, sampling, sent)
            except Transient as error:
                result.inconclusive = f"{PROBE_ATTEMPTS} attempts met transient errors, the last: {str(error)[:200]}"
                result.limit_field = limit_field
                break
            except Rejected as error:
                if names_limit(str(error)) and position + 1 < len(fields):
                    result.evidence["limit_field"] = f"{limit_field} refused: {str(error)[:300]}"
                    continue
                hint = ("; set teacher.completion_limit: max_completion_tokens (reasoning models need it)"
                        if names_limit(str(error)) else "")
                raise ProbeFailed(f"the probe ({', '.join(f'{k}={v}' for k, v in sampling.items())}) was refused: "
                                  f"{str(error)[:400]}{hint}") from None
            except Fatal as error:
                raise ProbeFailed(str(error)) from None
            result.limit_field = limit_field
            observe(result, answers, needs, sampling)
            break
    usage = [answer.get("usage") or {} for answer in sent]
    result.requests_sent = len(sent)
    result.tokens_billed = sum(u.get("prompt_tokens", 0) + u.get("completion_tokens", 0) for u in usage)
    result.cost_usd = round(cost_usd(sum(u.get("prompt_tokens", 0) for u in usage),
                                     sum(u.get("completion_tokens", 0) for u in usage), teacher.price), 8)
    return result, sent


def probe(teacher: TeacherParams, base_url: str, api_key: str, timeout_s: float, requests: list[TeacherRequest],
          estimate_prompt: Callable[[list[dict]], int], estimate_source: str,
          token_id: Callable[[str], int | None] | None = None) -> Probe:
    """Probe the endpoint for what ``requests`` need (in its own event loop: called from synchronous stage code)."""
    needs = needs_of(requests)
    result, _ = asyncio.run(run_probe(teacher, base_url, api_key, timeout_s, needs))
    result.needs = needs
    result.estimated_prompt_tokens = estimate_prompt(PROBE_MESSAGES)
    result.estimate_source = estimate_source
    if token_id is not None and result.tokens:
        result.unmapped_tokens = [token for token in dict.fromkeys(result.tokens) if token_id(token) is None]
    return result


def refusal(result: Probe, needs: dict, declared_n: bool) -> str | None:
    """Why the plan cannot be served by this endpoint, with the probe's evidence; None when it can (or the probe
    could not tell)."""
    name = result.teacher
    if result.inconclusive:
        return None
    if needs.get("logprobs") and not result.logprobs:
        return (f"{name}: the plan asks for log-probabilities (generate.top_logprobs={needs['top_logprobs']}), but "
                f"the probe found the endpoint ignores them ({result.evidence['logprobs']}; "
                f"{result.evidence['answer']}). "
                "Use a teacher that returns them (OpenAI, vLLM) or take feature out of generate.elicit")
    if needs.get("logprobs") and result.top_logprobs < needs["top_logprobs"]:
        return (f"{name}: the plan asks for {needs['top_logprobs']} alternatives per token, but the probe got at "
                f"most {result.top_logprobs} ({result.evidence['logprobs']}): lower generate.top_logprobs to "
                f"{result.top_logprobs}")
    if result.unmapped_tokens:
        shown = ", ".join(repr(token) for token in result.unmapped_tokens[:5])
        return (f"{name}: the teacher's tokens do not map onto the feature tokenizer (generate.feature_tokenizer, by "
                f"default student.model): of the probe's {len(result.tokens)} tokens, {shown} have no id there. "
                "Logit KD needs a teacher that shares the student's tokenizer")
    if needs.get("n") and declared_n and not result.n:
        return (f"{name}: the plan asks for several answers per request (generate.n), but the probe found the "
                f"endpoint ignores n ({result.evidence['n']}): set teacher.capabilities.n: false, and n requests "
                "with distinct seeds are sent instead")
    return None
