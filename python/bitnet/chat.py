"""Chat prompts: the GGUF's Jinja chat template, or BitNet's own format when it has none."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

__all__ = ["BUILTIN_CHAT_TEMPLATE", "render_chat"]

# The format BitNet b1.58 2B-4T was trained with: "User: {u}<|eot_id|>Assistant: ".
BUILTIN_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}System: {{ message['content'] }}<|eot_id|>"
    "{% elif message['role'] == 'user' %}User: {{ message['content'] }}<|eot_id|>"
    "{% elif message['role'] == 'assistant' %}Assistant: {{ message['content'] }}<|eot_id|>"
    "{% else %}{{ raise_exception('unknown role: ' ~ message['role']) }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant: {% endif %}"
)


def _raise(message: str) -> None:
    raise ValueError(f"chat template error: {message}")


@lru_cache(maxsize=8)
def _compile(template: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise
    return env.from_string(template)


def render_chat(
    messages: Sequence[Mapping[str, Any]],
    template: str | None,
    *,
    bos_token: str,
    eos_token: str,
    add_generation_prompt: bool = True,
) -> str:
    """Render ``messages`` (dicts with ``role`` and ``content``) into one prompt string."""
    if not messages:
        raise ValueError("messages is empty: give at least one {'role': ..., 'content': ...}")
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping) or "role" not in message or "content" not in message:
            raise ValueError(f"messages[{i}] must be a mapping with 'role' and 'content' keys")
    try:
        return _compile(template or BUILTIN_CHAT_TEMPLATE).render(
            messages=[dict(m) for m in messages],
            bos_token=bos_token,
            eos_token=eos_token,
            add_generation_prompt=add_generation_prompt,
        )
    except ValueError:
        raise  # raise_exception() in the template, or our own checks: already says what is wrong
    except (jinja2.TemplateError, ArithmeticError, LookupError, TypeError, RecursionError) as exc:
        # The template comes from the model file; whatever it does wrong is a bad request for
        # these messages, not a crash of the caller.
        raise ValueError(f"the model's chat template could not be rendered: {exc}") from exc
