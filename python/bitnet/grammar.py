"""Structured output: GBNF grammars, and JSON Schemas turned into them.

A generation given a ``grammar`` (llama.cpp's GBNF, with a ``root`` rule) only samples tokens
that continue it, through libllama's grammar sampler, and can end only where the grammar is
complete. :func:`json_schema_grammar` turns a JSON Schema into such a grammar with the converter
of the pinned llama-cpp-python package (its ``llama_grammar.py``), after checking that the
schema uses only what that converter enforces: a schema keyword it would ignore (``multipleOf``,
``uniqueItems``, an unknown ``format``...) is refused with the keyword's path instead of giving
output that parses but does not validate.

>>> print(json_schema_grammar({"type": "boolean"}))
root ::= ("true" | "false") space
space ::= " "?
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = [
    "JSON_OBJECT_SCHEMA",
    "MAX_GRAMMAR_BYTES",
    "check_grammar",
    "integer_range",
    "json_schema_grammar",
]

# OpenAI's JSON mode (response_format {"type": "json_object"}): any JSON object.
JSON_OBJECT_SCHEMA: Mapping[str, Any] = {"type": "object"}

# libllama parses a grammar recursively and walks chains of rules recursively: bounds that keep
# both far from the native stack's limit.
MAX_GRAMMAR_BYTES = 64 * 1024
_MAX_GROUP_DEPTH = 64
_MAX_REPEATS = 10_000
_MAX_SCHEMA_DEPTH = 32

# What the converter enforces (anything else would be ignored, so it is refused).
_SCHEMA_KEYWORDS = {
    "type", "properties", "required", "additionalProperties", "items", "prefixItems",
    "minItems", "maxItems", "enum", "const", "anyOf", "oneOf", "allOf", "$ref", "$defs",
    "definitions", "pattern", "format", "minLength", "maxLength",
    *("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"),  # of integers: our rules
}  # fmt: skip
_BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
# Integers have at most this many digits (the converter's own bound), bounded or not.
_MAX_DIGITS = 16
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
    depth, repeats = _group_depth(text)
    if repeats > _MAX_REPEATS:
        raise ValueError(
            f"{name} repeats items {repeats} times in all ({{m,n}} bounds); at most "
            f"{_MAX_REPEATS} are allowed (libllama writes out each repetition as rules)"
        )
    if depth > _MAX_GROUP_DEPTH:
        raise ValueError(
            f"{name} nests groups {depth} deep; at most {_MAX_GROUP_DEPTH} levels are allowed"
        )
    if not re.search(r"(?m)^\s*root\s*::=", text):
        raise ValueError(f"{name} has no 'root' rule (a line 'root ::= ...'), where output starts")
    return text


def _group_depth(text: str) -> tuple[int, int]:
    """The deepest nesting of ``(`` outside literals, character classes and comments, and the
    sum of the ``{m,n}`` repetition bounds."""
    depth = deepest = repeats = 0
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
        elif c == "{":
            end = text.find("}", i)
            bounds = text[i + 1 : end if end >= 0 else n].split(",")
            repeats += max((int(b) for b in bounds if b.strip().isdigit()), default=0)
        i += 1
    return deepest, repeats


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
        text = json.dumps(schema, allow_nan=False)  # in order: properties come out as declared
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValueError(f"{name} is not JSON data: {exc}") from None
    if len(text) > MAX_GRAMMAR_BYTES:
        raise ValueError(f"{name} is {len(text)} bytes of JSON; at most {MAX_GRAMMAR_BYTES}")
    return _convert(text, name)


@lru_cache(maxsize=64)
def _convert(text: str, name: str) -> str:
    schema = json.loads(text)
    try:
        _check_schema(schema, name, schema, 0)
    except (TypeError, AttributeError, KeyError, IndexError, RecursionError) as exc:
        # A value of the wrong JSON type somewhere (a number where a list of schemas goes).
        raise ValueError(
            f"{name} is not a valid JSON Schema ({type(exc).__name__}: {exc})"
        ) from None
    try:
        converter = _converter()
        converter.visit(converter.resolve_refs(schema, "stdin"), "")
        grammar = converter.format_grammar()
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


@lru_cache(maxsize=1)
def _converter_module() -> Any:
    """llama-cpp-python's ``llama_grammar.py`` (standard library only), loaded from its file.

    Importing it as ``llama_cpp.llama_grammar`` would run the package's ``__init__``, which
    loads its ctypes bindings and points libllama's log callback (one per process) at its own
    printer, taking native log lines away from the ``bitnet.native`` logger.
    """
    spec = importlib.util.find_spec("llama_cpp")  # finds the package without running it
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("llama-cpp-python (a dependency of bitnet) is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "llama_grammar.py"
    module_spec = importlib.util.spec_from_file_location("bitnet._llama_grammar", path)
    if module_spec is None or module_spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def _converter() -> Any:
    """llama-cpp-python's converter, with integer bounds (which it ignores) as our rules."""
    module = _converter_module()
    RESERVED_NAMES, SchemaConverter = module.RESERVED_NAMES, module.SchemaConverter

    class Converter(SchemaConverter):  # type: ignore[misc]
        def visit(self, schema: Any, name: str) -> Any:
            if isinstance(schema, dict) and isinstance(schema.get("type"), list):
                # The converter keeps only the types of a list: each type keeps the rest.
                rest = {k: v for k, v in schema.items() if k != "type"}
                schema = {"anyOf": [{**rest, "type": t} for t in schema["type"]]}
            if (
                isinstance(schema, dict)
                and schema.get("type") == "integer"
                and any(k in schema for k in _BOUNDS)
            ):
                low, high = _integer_bounds(schema)
                rule_name = name + "-" if name in RESERVED_NAMES else name or "root"
                return self._add_rule(rule_name, f"( {integer_range(low, high)} ) space")
            return super().visit(schema, name)

    return Converter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)


def _integer_bounds(schema: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """[low, high] of an integer schema's minimum/maximum (exclusive ones moved inwards)."""
    low = high = None
    for key in _BOUNDS:
        if key not in schema:
            continue
        value = schema[key]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{key} must be a number")
        if key in ("minimum", "exclusiveMinimum"):
            bound = math.ceil(value) + (
                1 if key == "exclusiveMinimum" and value == math.ceil(value) else 0
            )
            low = bound if low is None else max(low, bound)
        else:
            bound = math.floor(value) - (
                1 if key == "exclusiveMaximum" and value == math.floor(value) else 0
            )
            high = bound if high is None else min(high, bound)
    return low, high


def integer_range(low: int | None, high: int | None) -> str:
    """A GBNF expression of the integers in [low, high] (None: unbounded), written as JSON
    writes them (no leading zeros, no "-0"), with at most 16 digits.

    >>> integer_range(7, 12)
    '[7-9] | "1" [0-2]'
    """
    limit = 10**_MAX_DIGITS - 1
    low = -limit if low is None else max(low, -limit)
    high = limit if high is None else min(high, limit)
    if low > high:
        raise ValueError(f"no integer lies in [{low}, {high}]")
    alternatives = []
    if low < 0:  # the negative ones: "-" and the magnitudes
        alternatives += [f'"-" {a}' for a in _natural_range(max(1, -high), -low)]
    if high >= 0:
        alternatives += _natural_range(max(0, low), high)
    return " | ".join(alternatives)


def _natural_range(low: int, high: int) -> list[str]:
    """GBNF sequences of the integers in [low, high] (0 <= low <= high), one per digit count."""
    out = []
    for digits in range(len(str(low)), len(str(high)) + 1):
        first = max(low, 10 ** (digits - 1) if digits > 1 else 0)
        last = min(high, 10**digits - 1)
        if first <= last:
            out += _same_length(str(first), str(last))
    return out


def _same_length(low: str, high: str) -> list[str]:
    """GBNF sequences of the numbers from ``low`` to ``high``, decimal texts of equal length."""
    if low == high:
        return [json.dumps(low)]
    common = 0
    while low[common] == high[common]:
        common += 1
    prefix = [json.dumps(low[:common])] if common else []
    a, b, rest = int(low[common]), int(high[common]), len(low) - common - 1
    if rest == 0:
        return [" ".join([*prefix, f"[{a}-{b}]"])]
    any_rest = ["[0-9]"] * rest
    out = []
    # low's digit, then at least low's tail; the digits between, then anything; high's digit,
    # then at most high's tail. A whole-range tail merges into the middle part.
    lo_tail_full, hi_tail_full = low[common + 1 :] == "0" * rest, high[common + 1 :] == "9" * rest
    mid_low, mid_high = a + (0 if lo_tail_full else 1), b - (0 if hi_tail_full else 1)
    if not lo_tail_full:
        for tail in _same_length(low[common + 1 :], "9" * rest):
            out.append(" ".join([*prefix, json.dumps(str(a)), tail]))
    if mid_low <= mid_high:
        digit = json.dumps(str(mid_low)) if mid_low == mid_high else f"[{mid_low}-{mid_high}]"
        out.append(" ".join([*prefix, digit, *any_rest]))
    if not hi_tail_full:
        for tail in _same_length("0" * rest, high[common + 1 :]):
            out.append(" ".join([*prefix, json.dumps(str(b)), tail]))
    return out


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
    type_list = types if isinstance(types, list) else [types]
    for t in type_list:
        if t is not None and t not in _TYPES:
            raise ValueError(f"{path}.type must be one of {', '.join(_TYPES)}, got {t!r}")
    constraints = set(node) - _ANNOTATIONS - {"$defs", "definitions"}
    for key in ("anyOf", "oneOf", "$ref", "enum", "const"):
        allowed = {key, "type"} if key in ("enum", "const") else {key}
        if key in node and constraints - allowed:
            others = ", ".join(sorted(constraints - allowed))
            raise ValueError(
                f"{path} combines {key} with {others}, which would not be enforced; move them "
                f"into the {key} alternatives"
                if key in ("anyOf", "oneOf")
                else f"{path} combines {key} with {others}, which would not be enforced"
            )
    if "prefixItems" in node and constraints & {"items", "minItems", "maxItems"}:
        raise ValueError(f"{path}: prefixItems is an exact tuple; drop items/minItems/maxItems")
    for i, part in enumerate(node.get("allOf") or []):
        if isinstance(part, dict) and set(part) - _ANNOTATIONS - {
            "properties",
            "required",
            "$ref",
            "type",
        }:
            raise ValueError(
                f"{path}.allOf[{i}] may hold only properties, required and $ref (objects "
                "merged into one)"
            )
    if any(k in node for k in _BOUNDS):
        if "integer" not in type_list or "number" in type_list:
            raise ValueError(
                f"{path}: minimum/maximum can be enforced on integers only "
                '({"type": "integer", "minimum": ...}); give numbers as integers or drop the bound'
            )
        _integer_bounds(node)
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
