"""Where the teacher lives: an OpenAI-compatible endpoint, a local Hugging Face model, or a plugin
provider that serves the API itself (distill/teacher/providers.py; the offline demo's stand-in).

The API key is read only from the environment variable *named* in ``teacher.api_key_env``;
it is passed to the client inside the process that sends requests and is never written
to params, rows, metrics, logs or reports.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote, urlencode

from distill.entry import StageError
from distill.io import content_hash
from distill.params import TeacherParams
from distill.teacher import providers


class TeacherConfigError(StageError):
    pass


def teacher_identity(teacher: TeacherParams) -> str:
    """The teacher part of a request key. A real endpoint is identified by name and URL, a local
    Hugging Face teacher by name, model and ``teacher.hf.seed`` (it initialises a config-only model),
    a plugin by name, provider and what its settings change in its answers (its ``identity``)."""
    if teacher.provider == "hf":
        return f"{teacher.name}:hf:{teacher.model}:{content_hash({'seed': teacher.hf.seed})}"
    if providers.is_plugin(teacher.provider):
        plugin = providers.plugin(teacher.provider)
        return f"{teacher.name}:{teacher.provider}:{plugin.identity(plugin.Settings.model_validate(teacher.settings))}"
    return f"{teacher.name}:{teacher.base_url.rstrip('/')}"


def hf_url(teacher: TeacherParams) -> str:
    """The pseudo base URL of a local Hugging Face teacher: model and ``teacher.hf`` settings as
    plain text, so that it travels as a flow parameter like any URL."""
    return f"hf://{quote(teacher.model, safe='/:@-._~')}?{urlencode(teacher.hf.model_dump())}"


@contextmanager
def teacher_endpoint(teacher: TeacherParams) -> Iterator[tuple[str, str | None]]:
    """Yield ``(base_url, api_key_env)``; start and stop a plugin provider (the stand-in). A local
    Hugging Face teacher (``provider: hf``) yields ``hf://<model>?<settings>`` and no key: the
    transport layer loads the model in the sending process (distill/teacher/hf_local.py)."""
    if teacher.provider == "hf":
        yield hf_url(teacher), None
        return
    if providers.is_plugin(teacher.provider):
        plugin = providers.plugin(teacher.provider)
        with plugin.running(plugin.Settings.model_validate(teacher.settings)) as base_url:
            yield base_url, None
        return
    if not os.environ.get(teacher.api_key_env):
        raise TeacherConfigError(
            f"teacher.api_key_env names ${teacher.api_key_env}, which is not set: export the key there "
            "(for a local server without auth, any non-empty value works)"
        )
    yield teacher.base_url, teacher.api_key_env
