"""What the teacher endpoint supports, checked before a single request is sent.

``teacher.capabilities`` in params.yaml says what a configured endpoint can do (defaults: the
OpenAI API's). A local HF teacher and a plugin provider (the offline stand-in) say it themselves.
``check`` refuses a plan that asks for something the endpoint cannot give (log-probabilities,
too many alternatives per token), so a run fails in a second with a message naming the
params key, instead of paying for answers that cannot be used. Pure: no I/O.
"""

from __future__ import annotations

from distill.entry import StageError
from distill.params import CapabilityParams, TeacherParams
from distill.teacher import providers

# A local Hugging Face teacher (distill/teacher/hf_local.py) computes log-probs from its own logits.
HF = CapabilityParams(logprobs=True, max_top_logprobs=20, n=True, seed=True)


class CapabilityError(StageError):
    pass


def of(teacher: TeacherParams) -> CapabilityParams:
    """The capabilities that apply: a local HF teacher's or a plugin provider's, else teacher.capabilities."""
    if teacher.provider == "hf":
        return HF
    if providers.is_plugin(teacher.provider):
        return providers.plugin(teacher.provider).CAPABILITIES
    return teacher.capabilities


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
    # n > 1 without caps.n is no error: the answer step sends n requests with distinct seeds instead
