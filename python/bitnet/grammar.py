"""Structured output: GBNF grammars, and JSON Schemas turned into them.

A generation given a ``grammar`` (llama.cpp's GBNF, with a ``root`` rule) only samples tokens
that continue it, through libllama's grammar sampler, and can end only where the grammar is
complete. :func:`json_schema_grammar` turns a JSON Schema into such a grammar with the converter
of the pinned llama-cpp-python package (``llama_cpp.llama_grammar``), after checking that the
schema uses only what that converter enforces: a schema keyword it would ignore (``minimum``,
``uniqueItems``, an unknown ``format``...) is refused with the keyword's path instead of giving
output that parses but does not validate.

>>> print(json_schema_grammar({"type": "boolean"}))
root ::= ("true" | "false") space
space ::= " "?
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

__all__ = [
    "JSON_OBJECT_SCHEMA",
    "MAX_GRAMMAR_BYTES",
    "check_grammar",
    "json_schema_grammar",
]

# OpenAI's JSON mode (response_format {"type": "json_object"}): any JSON object.
JSON_OBJECT_SCHEMA: Mapping[str, Any] = {"type": "object"}

# libllama parses a grammar recursively and walks chains of rules recursively: bounds that keep
# both far from the native stack's limit.
MAX_GRAMMAR_BYTES = 64 * 1024
_MAX_GROUP_DEPTH = 64
_MAX_SCHEMA_DEPTH = 32

# What the converter enforces (anything else would be ignored, so it is refused).
_SCHEMA_KEYWORDS = {
    "type", "properties", "required", "additionalProperties", "items", "prefixItems",
    "minItems", "maxItems", "enum", "const", "anyOf", "oneOf", "allOf", "$ref", "$defs",
    "definitions", "pattern", "format", "minLength", "maxLength",
}  # fmt: skip
# Keywords that only describe (they constrain nothing).
_ANNOTATIONS = {
    "title", "description", "default", "examples", "$schema", "$id", "$comment", "readOnly",
    "writeOnly", "deprecated", "discriminator", "nullable",
}  # fmt: skip
_FORMATS = ("date", "time", "date-time", "uuid", "uuid1", "uuid2", "uuid3", "uuid4", "uuid5")
_TYPES = ("object", "array", "string", "number", "integer", "boolean", "null")

# The converter's string characters admit raw control characters, which JSON forbids inside a
# string (json.loads refuses them): ours admit only what a JSON string may hold.
_JSON_CHAR = r'[^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})'
# "." of a pattern, inside a JSON string: no quote, backslash or control character.
_PATTERN_DOT = r'[^"\\\x7F\x00-\x1F]'
# The converter's dates admit the 31st of every month and the year 0000: ours only days each
# month has (February up to the 28th, the days every year has) in years 0001-9999, so that
# format "date" always validates.
_DATE = (
    '( [1-9] [0-9] [0-9] [0-9] | "0" ( [1-9] [0-9] [0-9] | "0" ( [1-9] [0-9] | "0" [1-9] ) ) ) '
    '"-" ( ( "0" [13578] | "1" [02] ) "-" ( "0" [1-9] | [12] [0-9] | "3" '
    '[01] ) | ( "0" [469] | "11" ) "-" ( "0" [1-9] | [12] [0-9] | "30" ) | "02-" ( "0" [1-9] | '
    '"1" [0-9] | "2" [0-8] ) )'
)


def check_grammar(text: Any, name: str = "grammar") -> str:
    """``text`` if it can be handed to libllama's GBNF parser, else TypeError/ValueError.

    Checks the size, the nesting of groups and that a ``root`` rule is defined; libllama's
    parser checks the rest (its refusal is a ValueError when the generation starts).
    """
    if not isinstance(text, str):
        raise TypeError(f"{name} must be GBNF text, not {type(text).__name__}")
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_GRAMMAR_BYTES:
        raise ValueError(f"{name} is {size} bytes; at most {MAX_GRAMMAR_BYTES} are allowed")
    if "\x00" in text:
        raise ValueError(f"{name} contains a NUL character")
    depth = _group_depth(text)
    if depth > _MAX_GROUP_DEPTH:
        raise ValueError(
            f"{name} nests groups {depth} deep; at most {_MAX_GROUP_DEPTH} levels are allowed"
        )
    if not re.search(r"(?m)^\s*root\s*::=", text):
        raise ValueError(f"{name} has no 'root' rule (a line 'root ::= ...'), where output starts")
    return text


def _group_depth(text: str) -> int:
    """The deepest nesting of ``(`` outside literals, character classes and comments."""
    depth = deepest = 0
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in '"[':  # a literal or a class: skip to its end (backslash escapes)
            close = '"' if c == '"' else "]"
            i += 1
            while i < n and text[i] != close:
                i += 2 if text[i] == "\\" else 1
        elif c == "#":
            while i < n and text[i] not in "\r\n":
                i += 1
        elif c == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif c == ")":
            depth -= 1
        i += 1
    return deepest


def json_schema_grammar(schema: Any, name: str = "json_schema") -> str:
    """The GBNF grammar of JSON documents that validate against ``schema`` (a mapping, or
    its JSON text). ValueError naming the part of the schema that cannot be enforced."""
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except (ValueError, RecursionError) as exc:
            raise ValueError(f"{name} is not valid JSON: {exc}") from None
    if not isinstance(schema, Mapping):
        raise TypeError(f"{name} must be a JSON Schema object, not {type(schema).__name__}")
    try:
        text = json.dumps(schema, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValueError(f"{name} is not JSON data: {exc}") from None
    if len(text) > MAX_GRAMMAR_BYTES:
        raise ValueError(f"{name} is {len(text)} bytes of JSON; at most {MAX_GRAMMAR_BYTES}")
    return _convert(text, name)


@lru_cache(maxsize=64)
def _convert(text: str, name: str) -> str:
    schema = json.loads(text)
    _check_schema(schema, name, schema, 0)
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    try:
        grammar = json_schema_to_gbnf(text)
    except Exception as exc:  # the converter's asserts and KeyErrors: the schema's fault
        raise ValueError(f"{name} cannot be turned into a grammar: {exc}") from None
    rules = []
    for line in grammar.splitlines():
        rule, _, body = line.partition(" ::= ")
        if rule == "char":
            body = _JSON_CHAR
        elif rule == "dot":
            body = _PATTERN_DOT
        elif rule == "date":
            body = _DATE
        rules.append(f"{rule} ::= {body}")
    return "\n".join(rules)


def _check_schema(node: Any, path: str, root: Any, depth: int) -> None:
    """Refuse what the converter would not enforce, naming where it is."""
    if depth > _MAX_SCHEMA_DEPTH:
        raise ValueError(f"{path} nests schemas more than {_MAX_SCHEMA_DEPTH} levels deep")
    if isinstance(node, bool):
        if node is False:
            raise ValueError(f"{path} is the schema false, which no value matches")
        return
    if not isinstance(node, dict):
        raise ValueError(f"{path} must be a schema (an object), got {type(node).__name__}")
    for key in node:
        if key not in _SCHEMA_KEYWORDS and key not in _ANNOTATIONS:
            raise ValueError(
                f"{path} uses the keyword {key!r}, which structured output cannot enforce; "
                f"supported: {', '.join(sorted(_SCHEMA_KEYWORDS))} (and annotations such as "
                "title and description)"
            )
    types = node.get("type")
    for t in types if isinstance(types, list) else [types]:
        if t is not None and t not in _TYPES:
            raise ValueError(f"{path}.type must be one of {', '.join(_TYPES)}, got {t!r}")
    if "format" in node and node["format"] not in _FORMATS:
        raise ValueError(
            f"{path}.format {node['format']!r} cannot be enforced; supported formats: "
            f"{', '.join(_FORMATS)} (leave format out for any string)"
        )
    if "pattern" in node:
        _check_pattern(node["pattern"], f"{path}.pattern")
        if "minLength" in node or "maxLength" in node or "format" in node:
            raise ValueError(
                f"{path} combines pattern with minLength/maxLength/format; put the length "
                "into the pattern ({m,n})"
            )
    if "$ref" in node:
        ref = node["$ref"]
        if not isinstance(ref, str) or not ref.startswith("#/"):
            raise ValueError(
                f"{path}.$ref must point into this schema ('#/$defs/...'), got {ref!r}"
            )
        target: Any = root
        for part in ref[2:].split("/"):
            if not isinstance(target, dict) or part not in target:
                raise ValueError(f"{path}.$ref {ref!r} points at nothing in the schema")
            target = target[part]
    props = node.get("properties", {})
    if not isinstance(props, dict):
        raise ValueError(f"{path}.properties must be an object")
    required = node.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise ValueError(f"{path}.required must be a list of property names")
    missing = [r for r in required if r not in props]
    if missing and "allOf" not in node:
        raise ValueError(
            f"{path}.required names {', '.join(map(repr, missing))}, which properties does not "
            "define; describe each required property"
        )
    for key, sub in props.items():
        _check_schema(sub, f"{path}.properties.{key}", root, depth + 1)
    for key in ("additionalProperties", "items"):
        sub = node.get(key)
        if isinstance(sub, dict):
            _check_schema(sub, f"{path}.{key}", root, depth + 1)
        elif isinstance(sub, list):
            for i, item in enumerate(sub):
                _check_schema(item, f"{path}.{key}[{i}]", root, depth + 1)
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        if key in node:
            subs = node[key]
            if not isinstance(subs, list) or not subs:
                raise ValueError(f"{path}.{key} must be a non-empty list of schemas")
            for i, sub in enumerate(subs):
                _check_schema(sub, f"{path}.{key}[{i}]", root, depth + 1)
    for key in ("$defs", "definitions"):
        for name, sub in (node.get(key) or {}).items():
            _check_schema(sub, f"{path}.{key}.{name}", root, depth + 1)
    for key in ("minItems", "maxItems", "minLength", "maxLength"):
        if key in node and (not isinstance(node[key], int) or isinstance(node[key], bool)):
            raise ValueError(f"{path}.{key} must be an integer")
        if key in node and not 0 <= node[key] <= 1000:
            raise ValueError(f"{path}.{key} must be from 0 to 1000, got {node[key]}")
    if "enum" in node and (not isinstance(node["enum"], list) or not node["enum"]):
        raise ValueError(f"{path}.enum must be a non-empty list")


# A pattern's characters must all be ones a JSON string holds as they are: no quote, backslash
# or control character can come out of it (those would need escapes the converter does not
# write).
_PATTERN_ESCAPES = set("dw.-+*?()[]{}|^$/")
_SAFE_RANGES = ("az", "AZ", "09")


def _check_pattern(pattern: Any, path: str) -> None:
    if not isinstance(pattern, str):
        raise ValueError(f"{path} must be a string")
    if not (pattern.startswith("^") and pattern.endswith("$")):
        raise ValueError(f"{path} must be anchored: '^...$' (got {pattern!r})")
    i, n = 0, len(pattern)
    in_class = False
    while i < n:
        c = pattern[i]
        if c == "\\":
            if i + 1 >= n or pattern[i + 1] not in _PATTERN_ESCAPES:
                raise ValueError(
                    f"{path}: the escape {pattern[i : i + 2]!r} is not supported in patterns "
                    "(supported: \\d, \\w and escaped punctuation)"
                )
            i += 2
            continue
        if c == '"' or ord(c) < 0x20 or ord(c) == 0x7F:
            raise ValueError(f"{path}: the character {c!r} cannot appear in a pattern")
        if in_class:
            if c == "]":
                in_class = False
            elif c == "-" and pattern[i - 1] != "[" and pattern[i + 1 : i + 2] not in ("]", ""):
                lo, hi = pattern[i - 1], pattern[i + 1]
                if not any(a <= lo <= hi <= b for a, b in _SAFE_RANGES):
                    raise ValueError(
                        f"{path}: the class range {lo}-{hi} is not supported; use ranges "
                        "within a-z, A-Z or 0-9"
                    )
        elif c == "[":
            if pattern[i + 1 : i + 2] == "^":
                raise ValueError(f"{path}: negated classes [^...] are not supported")
            in_class = True
        i += 1
