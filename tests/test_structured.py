"""Structured output (grammar, json_schema), logprobs and tool calls in the library.

Outputs are checked with `jsonschema` (and its format checker), independent of the converter;
log-probabilities against numpy's log-softmax of `Model.logits`.
"""

from __future__ import annotations

import codecs
import doctest
import json
import re
import subprocess
import sys

import jsonschema
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bitnet
import bitnet.grammar
from bitnet.grammar import integer_range, json_schema_grammar
from bitnet.tools import parse_tool_calls, tool_grammar, tool_messages

SEEDS = range(12)

SCHEMAS = {
    "person": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 10},
            "age": {"type": "integer", "minimum": 0, "maximum": 130},
            "email": {"type": ["string", "null"], "maxLength": 12},
            "born": {"type": "string", "format": "date"},
            "tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "maxItems": 3},
        },
        "required": ["name", "age", "born"],
        "additionalProperties": False,
    },
    "nested": {
        "type": "object",
        "properties": {
            "order": {
                "type": "object",
                "properties": {
                    "id": {"type": "string", "format": "uuid"},
                    "lines": {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": 3,
                        "items": {
                            "type": "object",
                            "properties": {
                                "sku": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{2}$"},
                                "qty": {"type": "integer", "exclusiveMinimum": 0},
                                "price": {"type": "number"},
                            },
                            "required": ["sku", "qty"],
                        },
                    },
                    "paid": {"type": "boolean"},
                    "at": {"type": "string", "format": "time"},
                },
                "required": ["id", "lines", "paid"],
            },
        },
        "required": ["order"],
    },
    "refs_and_unions": {
        "$defs": {
            "point": {
                "type": "object",
                "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
                "required": ["x", "y"],
            }
        },
        "type": "object",
        "properties": {
            "shape": {"enum": ["line", "dot"]},
            "points": {"type": "array", "items": {"$ref": "#/$defs/point"}, "maxItems": 2},
            "label": {
                "anyOf": [{"type": "string", "minLength": 1, "maxLength": 5}, {"type": "null"}]
            },
            "kind": {"const": "v1"},
        },
        "required": ["shape", "points", "kind"],
    },
    "array_root": {"type": "array", "items": {"type": "integer", "minimum": -5, "maximum": 5}},
}


@pytest.fixture(scope="module")
def model(tiny_relu2):
    with bitnet.Model(tiny_relu2, n_ctx=512) as m:
        yield m


def test_grammar_module_examples():
    assert doctest.testmod(bitnet.grammar).failed == 0


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_json_schema_output_always_validates(model, name):
    schema = SCHEMAS[name]
    checker = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    finished = 0
    for seed in SEEDS:
        r = model.generate("Data:", json_schema=schema, max_tokens=300, seed=seed, temperature=1)
        if r.finish_reason == "length":
            assert len(r.tokens) == 300  # cut: an unfinished document, and said so
            continue
        assert r.finish_reason == "stop"
        errors = [e.message for e in checker.iter_errors(json.loads(r.text))]
        assert not errors, (seed, r.text, errors)
        finished += 1
    assert finished >= len(SEEDS) // 2


def test_the_converter_leaves_llama_cpp_python_unimported(tiny_relu2):
    # Importing llama_cpp would point libllama's one log callback at its own printer.
    code = (
        "import sys, bitnet\n"
        f"m = bitnet.Model({str(tiny_relu2)!r}, n_ctx=64)\n"
        "m.generate('x', json_schema={'type': 'object'}, max_tokens=4, seed=0)\n"
        "assert 'llama_cpp' not in sys.modules, sorted(sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_json_mode_and_greedy(model):
    for seed in SEEDS:
        r = model.generate("x", json_schema={"type": "object"}, max_tokens=200, seed=seed)
        if r.finish_reason == "stop":
            assert isinstance(json.loads(r.text), dict)
    a = model.generate("x", json_schema=SCHEMAS["person"], temperature=0, max_tokens=200)
    if a.finish_reason == "stop":  # properties come out in the order the schema gives them
        assert list(json.loads(a.text))[:2] == ["name", "age"]
    b = model.generate(
        "x", json_schema=json.dumps(SCHEMAS["person"]), temperature=0, max_tokens=200
    )
    assert a.text == b.text  # the schema as JSON text is the same schema


def test_max_tokens_cuts_a_document_with_finish_reason_length(model):
    r = model.generate("x", json_schema=SCHEMAS["nested"], max_tokens=5, seed=0)
    assert r.finish_reason == "length" and len(r.tokens) == 5
    with pytest.raises(ValueError):
        json.loads(r.text)


def test_gbnf_grammar(model):
    for seed in SEEDS:
        r = model.generate(
            "Is it?", grammar='root ::= ("yes" | "no") "."', seed=seed, temperature=2
        )
        assert r.text in ("yes.", "no.") and r.finish_reason == "stop"
    digits = model.generate("n", grammar="root ::= [0-9]{3}", temperature=1, seed=1)
    assert re.fullmatch(r"[0-9]{3}", digits.text)
    streamed = "".join(model.stream("n", grammar="root ::= [0-9]{3}", temperature=1, seed=1))
    assert streamed == digits.text


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"grammar": "root ::= ("}, "not valid GBNF"),
        ({"grammar": "item ::= [a-z]"}, "no 'root' rule"),
        ({"grammar": "root ::= " + "(" * 100 + '"a"' + ")" * 100}, "nests groups 100 deep"),
        ({"grammar": "root ::= x" + " " * 70000}, "at most 65536"),
        ({"grammar": 5}, "must be GBNF text"),
        ({"grammar": 'root ::= ("a"{0,1999})' * 6}, "repeats items 11994 times"),
        ({"json_schema": {"$defs": 5, "type": "object"}}, "not a valid JSON Schema"),
        ({"json_schema": {"properties": {"a": 5}}}, "must be a schema"),
        ({"json_schema": {"type": "number", "minimum": 1}}, "on integers only"),
        ({"json_schema": {"type": "array", "uniqueItems": True}}, "'uniqueItems'"),
        ({"json_schema": {"type": "string", "format": "email"}}, "format 'email'"),
        ({"json_schema": {"type": "string", "pattern": "[a-z]+"}}, "must be anchored"),
        ({"json_schema": {"type": "string", "pattern": '^"$'}}, "cannot appear"),
        ({"json_schema": {"type": "string", "pattern": "^[!-~]+$"}}, "class range"),
        ({"json_schema": {"required": ["a"], "type": "object"}}, "properties does not define"),
        ({"json_schema": {"$ref": "https://example.com/s.json"}}, "must point into this schema"),
        ({"json_schema": "{not json"}, "not valid JSON"),
        ({"json_schema": {"type": "integer", "minimum": 5, "maximum": 4}}, "no integer"),
        ({"json_schema": {"type": "object"}, "grammar": 'root ::= "a"'}, "not both"),
        ({"logprobs": 21}, "logprobs must be an integer from 0 to 20"),
        ({"stop": ["a"] * 65}, "stop has 65 strings; at most 64"),
        ({"stop": ["x" * 1025]}, "at most 1024 characters"),
    ],
)
def test_bad_constraints_are_refused_by_name(model, kwargs, error):
    with pytest.raises((ValueError, TypeError), match=re.escape(error)):
        model.generate("x", max_tokens=2, **kwargs)


def test_a_grammar_no_token_can_continue_is_an_error(model):
    # An empty class: no character at all may follow the "a".
    with pytest.raises(ValueError, match="the grammar allows no token after 1 generated"):
        model.generate("x", grammar=r'root ::= "a" [^\x00-\U0010FFFF]', max_tokens=4, seed=0)


def test_bytes_no_character_starts_with_never_pass_for_characters(model):
    # libllama's grammar takes the byte tokens 0xC0, 0xC1 and 0xF5-0xFF for characters of a
    # negated class; pushed up by a bias, they would fill the string with U+FFFD.
    invalid = [0xC0, 0xC1, *range(0xF5, 0x100)]
    assert all(model._native.detokenize([t], special=False) == bytes([t]) for t in invalid)
    schema = {"type": "string", "maxLength": 3}
    for seed in range(8):
        r = model.generate(
            "x", json_schema=schema, max_tokens=30, seed=seed, logit_bias={t: 100 for t in invalid}
        )
        assert r.finish_reason == "stop" and "\ufffd" not in r.text, r.text
        jsonschema.validate(json.loads(r.text), schema)


def test_integer_range_matches_every_integer_in_it_and_no_other():
    for low, high in [(7, 12), (-15, 3), (0, 0), (-130, -99), (1, 1000), (None, -3), (42, None)]:
        pattern = re.compile(_regex(integer_range(low, high)))
        for v in range(-1200, 1200):
            want = (low is None or v >= low) and (high is None or v <= high)
            assert bool(pattern.fullmatch(str(v))) == want, (low, high, v)
        assert not pattern.fullmatch("-0") and not pattern.fullmatch("007")


def _regex(gbnf: str) -> str:
    """A GBNF alternation of literals and classes as a Python regex (for the test above)."""
    parts = []
    for tok in re.findall(r'"[^"]*"|\[[^\]]*\]|\|', gbnf):
        parts.append(re.escape(tok[1:-1]) if tok.startswith('"') else tok)
    return "(?:" + "".join(parts) + ")"


def test_the_converter_keeps_json_strings_valid():
    grammar = json_schema_grammar({"type": "string"})
    assert r"\x00-\x1F" in grammar  # raw control characters are not JSON


def test_logprobs_are_numpy_log_softmax_of_the_logits(model):
    r = model.generate("Hello world", max_tokens=10, seed=5, temperature=0.9, logprobs=4)
    prompt = model.tokenize("Hello world")
    logits = model.logits(prompt + r.tokens).astype(np.float64)
    assert len(r.logprobs) == len(r.tokens)
    for i, entry in enumerate(r.logprobs):
        row = logits[len(prompt) - 1 + i]
        ref = row - row.max() - np.log(np.exp(row - row.max()).sum())
        assert entry.token == r.tokens[i]
        assert entry.logprob == pytest.approx(ref[entry.token], abs=1e-4)
        assert [t.token for t in entry.top] == list(np.argsort(-ref, kind="stable")[:4])
        assert [t.logprob for t in entry.top] == pytest.approx(np.sort(ref)[::-1][:4], abs=1e-4)
        assert entry.bytes.decode("utf-8", "replace") == entry.text
    assert "".join(e.text for e in r.logprobs) == r.text
    assert model.generate("Hello world", max_tokens=3, seed=5).logprobs is None


def test_streamed_logprobs_match_the_result_and_stop_strings_drop_theirs(model):
    stream = model.stream("Hello world", max_tokens=12, seed=2, logprobs=0)
    pieces = list(stream)
    assert all(isinstance(p, bitnet.TextPiece) for p in pieces)
    assert tuple(e for p in pieces for e in p.logprobs) == stream.result.logprobs
    assert all(e.top == () for e in stream.result.logprobs)
    full = model.generate("Hello world", max_tokens=12, seed=2, logprobs=0)
    stop = full.text[len(full.text) // 2 : len(full.text) // 2 + 2]
    cut = model.generate("Hello world", max_tokens=12, seed=2, logprobs=0, stop=[stop])
    assert cut.finish_reason == "stop"
    starts = np.cumsum([0] + [len(e.bytes) for e in full.logprobs])[:-1]
    kept = [e for e, at in zip(full.logprobs, starts, strict=True) if at < len(cut.text.encode())]
    assert cut.logprobs == tuple(kept)


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather of a city",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "maxLength": 8},
                    "unit": {"enum": ["c", "f"]},
                    "days": {"type": "integer", "minimum": 1, "maximum": 7},
                },
                "required": ["city", "days"],
            },
        },
    },
    {"type": "function", "function": {"name": "now", "parameters": {"type": "object"}}},
]


def test_required_tool_calls_parse_and_validate(model):
    params = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
    grammar = tool_grammar(TOOLS, "required")
    calls_seen = 0
    for seed in SEEDS:
        r = model.generate("Call:", grammar=grammar, max_tokens=200, seed=seed, temperature=1)
        if r.finish_reason == "length":
            continue
        calls = parse_tool_calls(r.text)
        assert calls, r.text
        for call in calls:
            jsonschema.validate(json.loads(call.arguments), params[call.name])
            calls_seen += 1
    assert calls_seen >= len(SEEDS) // 2


def test_named_and_single_tool_choice(model):
    grammar = tool_grammar(TOOLS, {"type": "function", "function": {"name": "now"}}, parallel=False)
    for seed in SEEDS:
        r = model.generate("Call:", grammar=grammar, max_tokens=200, seed=seed, temperature=1)
        if r.finish_reason == "stop":
            calls = parse_tool_calls(r.text)
            assert [c.name for c in calls] == ["now"]


def test_auto_tool_choice_is_text_or_calls(model):
    grammar = tool_grammar(TOOLS, "auto")
    for seed in SEEDS:
        r = model.generate("Call:", grammar=grammar, max_tokens=40, seed=seed, temperature=1)
        calls = parse_tool_calls(r.text)
        if calls is None and r.finish_reason == "stop":
            assert not r.text.startswith("<tool_call>")
    # Forced towards the call marker by a bias, auto makes a call.
    marker = model.tokenize("<tool_call>", add_bos=False)
    biased = model.generate(
        "Call:", grammar=grammar, max_tokens=200, seed=0, logit_bias={marker[0]: 100}
    )
    if biased.finish_reason == "stop":
        assert parse_tool_calls(biased.text)


@pytest.mark.parametrize(
    ("tools", "choice", "error"),
    [
        ([], "auto", "tools is empty"),
        (TOOLS + TOOLS[:1], "auto", "repeats the function name"),
        (TOOLS, {"type": "function", "function": {"name": "nope"}}, "'nope'"),
        (
            [{"type": "function", "function": {"name": "f", "parameters": {"not": {}}}}],
            "auto",
            "tools[0].function.parameters uses the keyword 'not'",
        ),
    ],
)
def test_bad_tools_are_refused(tools, choice, error):
    with pytest.raises(ValueError, match=re.escape(error)):
        tool_grammar(tools, choice)


def test_tool_messages_render_calls_and_results(model):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {
                        "name": "get_weather",
                        "arguments": '{"city": "Paris", "days": 1}',
                    },
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"},
    ]
    turns = tool_messages(messages, TOOLS, "auto")
    assert turns[0]["role"] == "system" and "Be brief." in turns[0]["content"]
    assert '"name": "get_weather"' in turns[0]["content"]  # the tools are described
    assert turns[2]["content"].startswith("<tool_call>\n")
    assert json.loads(turns[2]["content"].split("\n")[1])["arguments"] == {
        "city": "Paris",
        "days": 1,
    }
    assert turns[3] == {"role": "user", "content": "<tool_response>\nsunny, 21 C\n</tool_response>"}
    prompt = model.chat_prompt(turns)
    assert "sunny, 21 C" in prompt and "<tool_call>" in prompt
    assert tool_messages(messages[:2], TOOLS, "none") == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
    ]


def test_parse_tool_calls_refuses_what_is_not_calls():
    assert parse_tool_calls("hello") is None
    assert parse_tool_calls('<tool_call>\n{"name": "f", "arguments": {}') is None  # cut
    assert parse_tool_calls('<tool_call>\n{"name": "f"}\n</tool_call>') is None
    two = parse_tool_calls(
        '<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call>\n'
        '<tool_call>\n{"name": "g", "arguments": {}}\n</tool_call>'
    )
    assert [(c.name, json.loads(c.arguments)) for c in two] == [("f", {"a": 1}), ("g", {})]
    assert two[0].id != two[1].id and two[0].id.startswith("call_")


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=6), st.binary(max_size=6))
def test_utf8_cursor_agrees_with_pythons_decoder(before, more):
    """The cursor grammar sampling uses against Python's strict incremental decoder."""
    from bitnet._native import _core

    def valid_prefix(data: bytes) -> bool:  # whole characters, then at most a started one
        try:
            codecs.getincrementaldecoder("utf-8")("strict").decode(data, final=False)
        except UnicodeDecodeError:
            return False
        return True

    if not valid_prefix(before):
        return
    accepts, at_boundary = _core.model._utf8_accepts(before, more)
    assert accepts == valid_prefix(before + more)
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    decoder.decode(before, final=False)
    assert at_boundary == (decoder.getstate()[0] == b"")
