"""The OpenAI API's structured output, logprobs and tool calls, through the official client
against a real server on loopback (responses parsed with the client's own types)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Literal

import httpx
import jsonschema
import numpy as np
import pytest
from pydantic import BaseModel, Field

import bitnet
from bitnet.testing.server import ServerProcess

pytestmark = pytest.mark.slow  # starts a server process

MODEL = "tiny-relu2.gguf"
WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 8},
        "unit": {"enum": ["c", "f"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
    },
    "required": ["city", "days"],
    "additionalProperties": False,
}
TOOLS = [
    {
        "type": "function",
        "function": {"name": "get_weather", "description": "Weather", "parameters": WEATHER},
    },
    {"type": "function", "function": {"name": "now", "description": "The time"}},
]
ASK = [{"role": "user", "content": "Weather in Paris?"}]
_CALL = {"id": "c", "type": "function", "function": {"name": "now", "arguments": "{}"}}


@pytest.fixture(scope="module")
def server(tiny_relu2) -> Iterator[ServerProcess]:
    srv = ServerProcess(tiny_relu2, "-t", "1", "--parallel", "2")
    yield srv
    assert srv.stop() == 0


@pytest.fixture(scope="module")
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def test_json_schema_response_format_validates_streamed_and_not(client):
    fmt = {"type": "json_schema", "json_schema": {"name": "w", "schema": WEATHER, "strict": True}}
    done = 0
    for seed in range(6):
        r = client.chat.completions.create(
            model=MODEL, messages=ASK, max_tokens=120, seed=seed, response_format=fmt
        )
        if r.choices[0].finish_reason == "length":
            continue
        jsonschema.validate(json.loads(r.choices[0].message.content), WEATHER)
        chunks = client.chat.completions.create(
            model=MODEL, messages=ASK, max_tokens=120, seed=seed, response_format=fmt, stream=True
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == r.choices[0].message.content
        done += 1
    assert done >= 3


def test_json_object_mode(client):
    for seed in range(4):
        r = client.chat.completions.create(
            model=MODEL,
            messages=ASK,
            max_tokens=150,
            seed=seed,
            response_format={"type": "json_object"},
        )
        if r.choices[0].finish_reason == "stop":
            assert isinstance(json.loads(r.choices[0].message.content), dict)


def test_the_clients_parse_helper_gets_a_pydantic_object(client):
    class Forecast(BaseModel):
        city: str = Field(max_length=8)
        unit: Literal["c", "f"]
        days: int = Field(ge=1, le=7)

    parsed = 0
    for seed in range(6):
        try:
            r = client.chat.completions.parse(
                model=MODEL, messages=ASK, max_tokens=120, seed=seed, response_format=Forecast
            )
        except Exception as exc:  # cut by max_tokens: the client says so itself
            assert type(exc).__name__ == "LengthFinishReasonError"
            continue
        assert isinstance(r.choices[0].message.parsed, Forecast)
        parsed += 1
    assert parsed >= 3


def test_grammar_and_json_schema_fields_on_completions(client):
    r = client.completions.create(
        model=MODEL,
        prompt="Answer:",
        max_tokens=5,
        seed=1,
        extra_body={"grammar": 'root ::= "yes" | "no"'},
    )
    assert r.choices[0].text in ("yes", "no")
    r = client.completions.create(
        model=MODEL,
        prompt="Data:",
        max_tokens=120,
        seed=2,
        extra_body={"json_schema": WEATHER},
    )
    if r.choices[0].finish_reason == "stop":
        jsonschema.validate(json.loads(r.choices[0].text), WEATHER)


def test_chat_logprobs_are_the_models(client, tiny_relu2):
    r = client.chat.completions.create(
        model=MODEL, messages=ASK, max_tokens=6, seed=3, logprobs=True, top_logprobs=3
    )
    content = r.choices[0].logprobs.content
    assert "".join(t.token for t in content) == r.choices[0].message.content
    with bitnet.Model(tiny_relu2, n_ctx=256) as m:
        prompt = m.chat_tokens(ASK)
        tokens = m.tokenize(r.choices[0].message.content, add_bos=False)
        logits = m.logits(prompt + tokens).astype(np.float64)
    if len(tokens) == len(content):  # the text re-tokenizes to the same tokens
        for i, t in enumerate(content):
            row = logits[len(prompt) - 1 + i]
            ref = row - row.max() - np.log(np.exp(row - row.max()).sum())
            assert t.logprob == pytest.approx(ref[tokens[i]], abs=1e-3)
            assert len(t.top_logprobs) == 3
            assert t.top_logprobs[0].logprob == pytest.approx(ref.max(), abs=1e-3)
    assert bytes(content[0].bytes).decode("utf-8", "replace") == content[0].token
    chunks = list(
        client.chat.completions.create(
            model=MODEL, messages=ASK, max_tokens=6, seed=3, logprobs=True, stream=True
        )
    )
    streamed = [
        t
        for c in chunks
        if c.choices and c.choices[0].logprobs
        for t in c.choices[0].logprobs.content
    ]
    assert [t.token for t in streamed] == [t.token for t in content]
    assert all(t.top_logprobs == [] for t in streamed)
    plain = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=3, seed=3)
    assert plain.choices[0].logprobs is None


def test_completion_logprobs(client):
    r = client.completions.create(model=MODEL, prompt="Hello", max_tokens=6, seed=4, logprobs=2)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == r.usage.completion_tokens
    text = r.choices[0].text
    if "".join(lp.tokens) == text:  # every token is whole characters
        assert lp.text_offset == [len("".join(lp.tokens[:i])) for i in range(len(lp.tokens))]
    assert lp.text_offset == sorted(lp.text_offset) and lp.text_offset[-1] <= len(text)
    assert all(len(top) <= 2 for top in lp.top_logprobs)
    assert all(v <= 0 for v in lp.token_logprobs)
    chunks = list(
        client.completions.create(
            model=MODEL, prompt="Hello", max_tokens=6, seed=4, logprobs=2, stream=True
        )
    )
    tokens = [t for c in chunks if c.choices[0].logprobs for t in c.choices[0].logprobs.tokens]
    offsets = [
        o for c in chunks if c.choices[0].logprobs for o in c.choices[0].logprobs.text_offset
    ]
    assert tokens == lp.tokens and offsets == lp.text_offset


def test_required_tool_calls_streamed_and_not(client):
    seen = 0
    for seed in range(6):
        r = client.chat.completions.create(
            model=MODEL,
            messages=ASK,
            max_tokens=150,
            seed=seed,
            tools=TOOLS,
            tool_choice="required",
        )
        choice = r.choices[0]
        if choice.finish_reason == "length":
            continue
        assert choice.finish_reason == "tool_calls" and choice.message.content is None
        for call in choice.message.tool_calls:
            assert call.type == "function" and call.id.startswith("call_")
            if call.function.name == "get_weather":
                jsonschema.validate(json.loads(call.function.arguments), WEATHER)
            else:
                assert call.function.name == "now"
        chunks = list(
            client.chat.completions.create(
                model=MODEL,
                messages=ASK,
                max_tokens=150,
                seed=seed,
                tools=TOOLS,
                tool_choice="required",
                stream=True,
            )
        )
        deltas = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
        assert [(d.index, d.function.name, d.function.arguments) for d in deltas] == [
            (i, c.function.name, c.function.arguments)
            for i, c in enumerate(choice.message.tool_calls)
        ]
        assert chunks[-1].choices[0].finish_reason == "tool_calls"
        seen += 1
    assert seen >= 3


def test_named_tool_choice_with_the_clients_stream_helper(client):
    choice = {"type": "function", "function": {"name": "get_weather"}}
    with client.chat.completions.stream(
        model=MODEL,
        messages=ASK,
        max_tokens=150,
        seed=1,
        tools=TOOLS,
        tool_choice=choice,
        parallel_tool_calls=False,
    ) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    if final.choices[0].finish_reason == "tool_calls":
        calls = final.choices[0].message.tool_calls
        assert [c.function.name for c in calls] == ["get_weather"]


def test_tool_choice_none_and_auto_and_a_tool_result_turn(client):
    r = client.chat.completions.create(
        model=MODEL, messages=ASK, max_tokens=8, seed=1, tools=TOOLS, tool_choice="none"
    )
    assert r.choices[0].message.tool_calls is None and r.choices[0].finish_reason != "tool_calls"
    r = client.chat.completions.create(
        model=MODEL, messages=ASK, max_tokens=30, seed=1, tools=TOOLS
    )
    message = r.choices[0].message
    assert message.tool_calls or not (message.content or "").startswith("<tool_call>")
    history = [
        *ASK,
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
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    r = client.chat.completions.create(
        model=MODEL, messages=history, max_tokens=5, seed=1, tools=TOOLS
    )
    assert r.choices[0].finish_reason in ("stop", "length", "tool_calls")


@pytest.mark.parametrize(
    ("body", "param", "message"),
    [
        ({"response_format": {"type": "json_schema"}}, "response_format", "needs a json_schema"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"schema": {"not": {}}}}},
            None,
            "'not'",
        ),
        ({"top_logprobs": 2}, "top_logprobs", "needs logprobs"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs", ""),
        ({"tool_choice": "required"}, "tool_choice", "needs tools"),
        (
            {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "x"}}},
            "tools",
            "'x'",
        ),
        ({"tools": TOOLS, "response_format": {"type": "json_object"}}, "tools", "keep one"),
        ({"grammar": "root ::= ("}, None, "not valid GBNF"),
        ({"grammar": 'root ::= "a"', "json_schema": {}}, None, "not both"),
        ({"tools": [{"type": "function", "function": {"name": "bad name"}}]}, None, ""),
        (
            {"messages": [{"role": "tool", "tool_call_id": "1"}]},
            "messages[0].content",
            "needs content",
        ),
        (
            {"messages": [{"role": "user", "content": "x", "tool_calls": [_CALL]}]},
            "messages[0].tool_calls",
            "only assistant turns",
        ),
    ],
)
def test_bad_structured_requests(server, body, param, message):
    r = httpx.post(server.url + "/v1/chat/completions", json={"messages": ASK, **body}, timeout=30)
    assert r.status_code in (400, 422), r.text
    error = r.json()["error"]
    assert message in error["message"]
    if param is not None and r.status_code == 400:
        assert error["param"] == param


def test_completion_logprobs_bound(server):
    r = httpx.post(server.url + "/v1/completions", json={"prompt": "x", "logprobs": 21})
    assert r.status_code == 422 and r.json()["error"]["param"].startswith("logprobs")


def test_langchain_structured_output(server):
    from langchain_openai import ChatOpenAI

    class Forecast(BaseModel):
        city: str = Field(max_length=8)
        unit: Literal["c", "f"]
        days: int = Field(ge=1, le=7)

    for method in ("json_schema", "function_calling"):
        llm = ChatOpenAI(
            base_url=server.url + "/v1", api_key="unused", model=MODEL, max_tokens=150, seed=1
        )
        forecast = llm.with_structured_output(Forecast, method=method).invoke("Weather in Paris?")
        assert isinstance(forecast, Forecast), method
