"""What the teacher endpoint supports, checked before a single request is sent.

``teacher.capabilities`` in params.yaml says what a configured endpoint can do (defaults: the
OpenAI API's). The offline stand-in supports everything it is asked here, whatever params say.
``check`` refuses a plan that asks for something the endpoint cannot give (log-probabilities,
too many alternatives per token, n > 1), so a run fails in a second with a message naming the
params key, instead of paying for answers that cannot be used. Pure: no I/O.
"""

from __future__ import annotations

from stages.entry import StageError
from stages.params import CapabilityParams, TeacherParams

# The stand-in (stages/teachers/standin.py) returns logprobs with up to 20 alternatives,
# honours n (up to 128) and seed.
STANDIN = CapabilityParams(logprobs=True, max_top_logprobs=20, n=True, seed=True)
# A local Hugging Face teacher (stages/teachers/hf_local.py) computes log-probs from its own logits.
HF = CapabilityParams(logprobs=True, max_top_logprobs=20, n=True, seed=True)


class CapabilityError(StageError):
    pass


def of(teacher: TeacherParams) -> CapabilityParams:
    """The capabilities that apply: a local HF teacher's or the stand-in's (base_url null), else
    teacher.capabilities."""
    if teacher.provider == "hf":
        return HF
    return STANDIN if teacher.base_url is None else teacher.capabilities


def check(plan_sampling: dict, caps: CapabilityParams, teacher: str = "the teacher") -> None:
    """Raise ``CapabilityError`` when the sampling settings ask for what ``caps`` lacks."""
    top = plan_sampling.get("top_logprobs")
    if plan_sampling.get("logprobs") and not caps.logprobs:
        raise CapabilityError(
            f"generate.top_logprobs={top} asks for log-probabilities, but teacher.capabilities.logprobs is false "
            f"for {teacher}: the feature method needs a teacher that returns them (OpenAI, vLLM); "
            "else set generate.top_logprobs: null")
    if top is not None and top > caps.max_top_logprobs:
        raise CapabilityError(
            f"generate.top_logprobs={top} asks for more alternatives per token than "
            f"teacher.capabilities.max_top_logprobs={caps.max_top_logprobs} allows for {teacher}: "
            f"lower generate.top_logprobs to at most {caps.max_top_logprobs}")
    n = int(plan_sampling.get("n") or 1)
    if n > 1 and not caps.n:
        raise CapabilityError(
            f"generate.n={n} asks for several answers per request, but teacher.capabilities.n is false for "
            f"{teacher}: set generate.n: 1 (and use another generate.seed per extra answer)")
