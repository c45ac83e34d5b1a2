"""Where the teacher lives: a configured OpenAI-compatible endpoint or the local stand-in.

The API key is read only from the environment variable *named* in ``teacher.api_key_env``;
it is passed to the client inside the process that sends requests and is never written
to params, rows, metrics, logs or reports.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote, urlencode

from stages.entry import StageError
from stages.io import content_hash
from stages.params import TeacherParams


class TeacherConfigError(StageError):
    pass


def teacher_identity(teacher: TeacherParams) -> str:
    """The teacher part of a request key. The stand-in's fault settings change its answers,
    so they are part of its identity; a real endpoint is identified by name and URL, a local
    Hugging Face teacher by name, model and ``teacher.hf.seed`` (it initialises a config-only model)."""
    if teacher.provider == "hf":
        return f"{teacher.name}:hf:{teacher.model}:{content_hash({'seed': teacher.hf.seed})}"
    if teacher.base_url is None:
        settings = teacher.standin.model_dump(exclude={"idempotency"})  # billing, not answers
        if not settings["ignore_logprobs"]:  # a later switch: off, it leaves the keys of existing stores alone
            del settings["ignore_logprobs"]
        return f"{teacher.name}:standin:{content_hash(settings)}"
    return f"{teacher.name}:{teacher.base_url.rstrip('/')}"


def hf_url(teacher: TeacherParams) -> str:
    """The pseudo base URL of a local Hugging Face teacher: model and ``teacher.hf`` settings as
    plain text, so that it travels as a flow parameter like any URL."""
    return f"hf://{quote(teacher.model, safe='/:@-._~')}?{urlencode(teacher.hf.model_dump())}"


@contextmanager
def teacher_endpoint(teacher: TeacherParams) -> Iterator[tuple[str, str | None]]:
    """Yield ``(base_url, api_key_env)``; start and stop the stand-in when base_url is null. A local
    Hugging Face teacher (``provider: hf``) yields ``hf://<model>?<settings>`` and no key: the
    transport layer loads the model in the sending process (stages/teachers/hf_local.py)."""
    if teacher.provider == "hf":
        yield hf_url(teacher), None
        return
    if teacher.base_url is None:
        from stages.teachers.standin import running_standin

        with running_standin(teacher.standin) as base_url:
            yield base_url, None
        return
    if not os.environ.get(teacher.api_key_env):
        raise TeacherConfigError(
            f"teacher.api_key_env names ${teacher.api_key_env}, which is not set: export the key there "
            "(for a local server without auth, any non-empty value works)"
        )
    yield teacher.base_url, teacher.api_key_env
