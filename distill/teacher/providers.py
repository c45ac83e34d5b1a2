"""Which teacher a ``teacher.provider`` names: the two built-in kinds, or a plugin module.

Built in: ``openai`` (any OpenAI-compatible endpoint at ``teacher.base_url``: OpenAI, vLLM, Ollama,
llama.cpp, ``transformers serve``) and ``hf`` (a local Hugging Face model, distill/teacher/hf_local.py).
Any other name is a plugin: a module found in ``PLUGINS`` (or given as a dotted module path) that
serves the OpenAI API itself, with its knobs in ``teacher.settings``. A plugin module exposes

- ``Settings``: the pydantic schema of its knobs, applied to ``teacher.settings`` at params load;
- ``running(settings)``: a context manager that starts it and yields its base URL;
- ``identity(settings) -> str``: what in its knobs changes answers (part of every request key);
- ``CAPABILITIES``: the ``CapabilityParams`` it supports, whatever ``teacher.capabilities`` says;
- ``CHARS_PER_TOKEN``: how the cost estimate counts its tokens;
- ``main(argv)``: optional, what ``distill teacher`` runs (serve it in the foreground).

This registry is the only product module that names the demo; it imports it by name, on use.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

BUILT_IN = ("openai", "hf")
PLUGINS = {"standin": "demo.standin"}  # the offline stand-in teacher of the demo


def is_plugin(provider: str) -> bool:
    return provider not in BUILT_IN


def plugin(provider: str) -> ModuleType:
    """The plugin module of ``provider``; ValueError naming the known ones when there is none."""
    name = PLUGINS.get(provider, provider)
    try:
        module = importlib.import_module(name)
    except ImportError:
        known = ", ".join([*BUILT_IN, *PLUGINS])
        raise ValueError(f"unknown provider {provider!r}: expected one of {known}, or a module path") from None
    missing = [attr for attr in ("Settings", "running", "identity", "CAPABILITIES", "CHARS_PER_TOKEN")
               if not hasattr(module, attr)]
    if missing:
        raise ValueError(f"provider {provider!r} ({name}) lacks {', '.join(missing)}")
    return module


def settings(provider: str, raw: dict[str, Any]) -> Any:
    """The plugin's validated settings object (raises pydantic's ValidationError on bad knobs)."""
    return plugin(provider).Settings.model_validate(raw)
