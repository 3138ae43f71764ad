"""Tool calls: OpenAI-style function definitions turned into a prompt, a grammar and back.

A model is told about the functions in a system message and answers a call in one format,
whatever its chat template (Hermes' tags, which many open models were trained on)::

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

The grammar of :func:`tool_grammar` makes the answer follow it: with ``tool_choice``
``"required"`` (or a named function) the answer is one or more calls whose ``arguments``
validate against the function's ``parameters`` schema; with ``"auto"`` it is either calls or
plain text (which then cannot start with ``<tool_call>``). :func:`parse_tool_calls` reads the
calls back. :func:`tool_messages` rewrites a conversation's assistant calls and ``tool``
results into text every chat template can render.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .grammar import json_schema_grammar

__all__ = [
    "CALL_CLOSE",
    "CALL_OPEN",
    "ToolCall",
    "check_tools",
    "parse_tool_calls",
    "tool_grammar",
    "tool_messages",
    "tool_system_prompt",
]

CALL_OPEN = "<tool_call>"
CALL_CLOSE = "</tool_call>"
_MAX_TOOLS = 128


@dataclass(frozen=True)
class ToolCall:
    """One call the model made: the function's name and its arguments as JSON text."""

    id: str
    name: str
    arguments: str

    def to_openai(self) -> dict[str, Any]:
        """The ``message.tool_calls[i]`` of OpenAI's chat completion."""
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


def check_tools(tools: Sequence[Mapping[str, Any]], tool_choice: Any = "auto") -> str | None:
    """The function a ``tool_choice`` names (None for "auto"/"required"/"none"), after checking
    that ``tools`` are OpenAI function definitions with unique names whose parameters can be
    enforced. ValueError naming the problem."""
    if not tools:
        raise ValueError("tools is empty: give at least one function, or leave tools out")
    if len(tools) > _MAX_TOOLS:
        raise ValueError(f"tools has {len(tools)} functions; at most {_MAX_TOOLS} are allowed")
    names = set()
    for i, tool in enumerate(tools):
        name = tool["function"]["name"]
        if name in names:
            raise ValueError(f"tools[{i}] repeats the function name {name!r}")
        names.add(name)
        json_schema_grammar(_parameters(tool), f"tools[{i}].function.parameters")
    if isinstance(tool_choice, Mapping):
        name = tool_choice["function"]["name"]
        if name not in names:
            raise ValueError(
                f"tool_choice names the function {name!r}, which tools does not define "
                f"(defined: {', '.join(sorted(names))})"
            )
        return str(name)
    return None


def _parameters(tool: Mapping[str, Any]) -> Mapping[str, Any]:
    params = tool["function"].get("parameters")
    return params if params is not None else {"type": "object", "properties": {}}


def tool_system_prompt(tools: Sequence[Mapping[str, Any]], tool_choice: Any = "auto") -> str:
    """The system text that tells the model which functions it may call and how."""
    lines = [
        "You can call functions. Their definitions, as JSON Schema:",
        "<tools>",
        *(json.dumps(t["function"], ensure_ascii=False) for t in tools),
        "</tools>",
        "To call a function, answer only with one such block per call:",
        f'{CALL_OPEN}\n{{"name": <function name>, "arguments": <arguments object>}}\n{CALL_CLOSE}',
    ]
    if tool_choice == "auto":
        lines.append("If no function helps, answer the user in plain text.")
    return "\n".join(lines)


def tool_grammar(
    tools: Sequence[Mapping[str, Any]], tool_choice: Any = "auto", parallel: bool = True
) -> str:
    """The GBNF grammar of an answer under ``tool_choice`` ("auto", "required" or
    ``{"type": "function", "function": {"name": ...}}``); ``parallel``: more than one call."""
    named = check_tools(tools, tool_choice)
    chosen = [t for t in tools if named is None or t["function"]["name"] == named]
    calls = [
        {
            "type": "object",
            "properties": {
                "name": {"const": t["function"]["name"]},
                "arguments": _parameters(t),
            },
            "required": ["name", "arguments"],
        }
        for t in chosen
    ]
    schema = calls[0] if len(calls) == 1 else {"anyOf": calls}
    rules = []
    for line in json_schema_grammar(schema, "tools").splitlines():
        rule, _, body = line.partition(" ::= ")
        rules.append(f"{'tool-call-json' if rule == 'root' else rule} ::= {body}")
    open_, close = json.dumps(CALL_OPEN + "\n"), json.dumps("\n" + CALL_CLOSE)
    rules.append(f"tool-call ::= {open_} tool-call-json {close}")
    rules.append(
        'tool-calls ::= tool-call ( "\\n" tool-call )*' if parallel else "tool-calls ::= tool-call"
    )
    if tool_choice == "auto":
        rules.append("root ::= tool-calls | plain-text")
        rules += _not_starting_with(CALL_OPEN, "plain-text")
    else:
        rules.append("root ::= tool-calls")
    return "\n".join(rules)


def _not_starting_with(marker: str, name: str) -> list[str]:
    """Rules of ``name``: any text (also none) that does not start with ``marker``."""
    any_char = r"[\x00-\U0010FFFF]"
    alternatives = ['""']
    for i, c in enumerate(marker):
        prefix = json.dumps(marker[:i]) + " " if i else ""
        escaped = "\\\\" if c == "\\" else ("\\]" if c == "]" else c)
        alternatives.append(f"{prefix}[^{escaped}] {name}-rest")
        if i:
            alternatives.append(json.dumps(marker[:i]))  # a proper prefix, then the end
    return [f"{name} ::= {' | '.join(alternatives)}", f"{name}-rest ::= {any_char}*"]


def parse_tool_calls(text: str) -> list[ToolCall] | None:
    """The calls in an answer made under :func:`tool_grammar`, or None when it is plain text
    (or calls cut short: finish_reason "length")."""
    rest = text.strip()
    if not rest.startswith(CALL_OPEN):
        return None
    calls = []
    while rest.startswith(CALL_OPEN):
        end = rest.find(CALL_CLOSE)
        if end < 0:
            return None
        try:
            call = json.loads(rest[len(CALL_OPEN) : end])
            name, arguments = call["name"], call["arguments"]
        except (ValueError, KeyError, TypeError):
            return None
        arguments_text = json.dumps(arguments, ensure_ascii=False)
        calls.append(ToolCall("call_" + secrets.token_hex(12), str(name), arguments_text))
        rest = rest[end + len(CALL_CLOSE) :].lstrip()
    return calls if not rest else None


def tool_messages(
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Mapping[str, Any]] | None = None,
    tool_choice: Any = "auto",
) -> list[dict[str, Any]]:
    """``messages`` as plain ``{"role", "content"}`` turns for any chat template: the tools'
    system text first (merged into a leading system message), an assistant's ``tool_calls``
    written in the call format, a ``tool`` result as a user turn in ``<tool_response>`` tags."""
    out: list[dict[str, Any]] = []
    for m in messages:
        role, content = m["role"], m.get("content") or ""
        if role == "assistant" and m.get("tool_calls"):
            blocks = [
                f"{CALL_OPEN}\n"
                + json.dumps(
                    {
                        "name": c["function"]["name"],
                        "arguments": _arguments(c["function"]["arguments"]),
                    },
                    ensure_ascii=False,
                )
                + f"\n{CALL_CLOSE}"
                for c in m["tool_calls"]
            ]
            content = "\n".join([content, *blocks] if content else blocks)
        elif role == "tool":
            role, content = "user", f"<tool_response>\n{content}\n</tool_response>"
        out.append({"role": role, "content": content})
    if tools and tool_choice != "none":
        system = tool_system_prompt(tools, tool_choice)
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": out[0]["content"] + "\n\n" + system}
        else:
            out.insert(0, {"role": "system", "content": system})
    return out


def _arguments(text: Any) -> Any:
    """An earlier call's arguments (JSON text, as OpenAI sends them) as data."""
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text
