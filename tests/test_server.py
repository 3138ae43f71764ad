"""The real server on a loopback port, driven by httpx and the official openai client."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import bitnet
from bitnet.testing import generate_model
from bitnet.testing.server import ServerProcess

pytestmark = pytest.mark.slow  # starts server processes (still a few seconds each)


def Server(model: Path, *args: str) -> ServerProcess:
    return ServerProcess(model, "-t", "1", *args)


@pytest.fixture(scope="module")
def deep_model(tmp_path_factory) -> Path:
    # 24 layers: slow enough per token to observe requests in flight.
    return generate_model(tmp_path_factory.mktemp("srv") / "deep.gguf", n_layer=24, seed=1)


@pytest.fixture(scope="module")
def server(tiny_relu2) -> Iterator[Server]:
    srv = Server(tiny_relu2, "--parallel", "2")
    yield srv
    assert srv.stop() == 0


def test_openai_client_completions_and_chat(server):
    from openai import OpenAI

    client = OpenAI(base_url=server.url + "/v1", api_key="unused")
    models = client.models.list()
    assert [m.id for m in models.data] == ["tiny-relu2.gguf"]

    model = "tiny-relu2.gguf"
    done = client.completions.create(
        model=model, prompt="Hello", max_tokens=8, temperature=0, seed=1
    )
    assert done.choices[0].finish_reason in ("stop", "length")
    assert done.usage.completion_tokens <= 8 and done.usage.prompt_tokens == 2
    streamed = client.completions.create(
        model=model, prompt="Hello", max_tokens=8, temperature=0, stream=True
    )
    assert "".join(c.choices[0].text for c in streamed) == done.choices[0].text

    messages = [{"role": "user", "content": "Hi there"}]
    chat = client.chat.completions.create(
        model=model, messages=messages, max_tokens=6, temperature=0
    )
    assert chat.choices[0].message.role == "assistant"
    chunks = list(
        client.chat.completions.create(
            model=model, messages=messages, max_tokens=6, temperature=0, stream=True
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == chat.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == chat.choices[0].finish_reason


def test_openai_client_penalties_reach_the_sampler(server, tiny_relu2):
    from openai import OpenAI

    client = OpenAI(base_url=server.url + "/v1", api_key="unused")
    penalties = {"presence_penalty": 1.5, "frequency_penalty": 0.5}
    got = client.completions.create(
        model="tiny-relu2.gguf", prompt="Hello", max_tokens=10, temperature=0, **penalties
    )
    with bitnet.Model(tiny_relu2, n_ctx=128) as m:
        want = m.generate("Hello", max_tokens=10, temperature=0, **penalties)
    assert got.choices[0].text == want.text
    # logit_bias in OpenAI's shape (token ids as string keys).
    biased = client.completions.create(
        model="tiny-relu2.gguf",
        prompt="Hello",
        max_tokens=3,
        temperature=0,
        logit_bias={"42": 100},
    )
    with bitnet.Model(tiny_relu2, n_ctx=128) as m:
        assert biased.choices[0].text == m.detokenize([42] * 3)
    r = httpx.post(server.url + "/v1/completions", json={"prompt": "Hi", "logit_bias": {"x": 1}})
    assert r.status_code == 400 and "logit_bias keys must be token ids" in r.text
    r = httpx.post(server.url + "/v1/completions", json={"prompt": "Hi", "logit_bias": {"1": 101}})
    assert r.status_code == 422 and r.json()["error"]["param"].startswith("logit_bias")


def test_openai_client_n_choices_run_together(server, tiny_relu2):
    from openai import BadRequestError, OpenAI

    client = OpenAI(base_url=server.url + "/v1", api_key="unused")
    model = "tiny-relu2.gguf"
    sampled = {"temperature": 0.9, "top_k": 0, "top_p": 1.0, "min_p": 0.0, "max_tokens": 8}
    got = client.completions.create(
        model=model,
        prompt="Hello",
        n=2,
        seed=5,
        temperature=0.9,
        top_p=1.0,
        max_tokens=8,
        extra_body={"top_k": 0, "min_p": 0.0},
    )
    with bitnet.Model(tiny_relu2, n_ctx=128) as m:
        want = [m.generate("Hello", seed=5 + i, **sampled) for i in range(2)]
    assert [c.index for c in got.choices] == [0, 1]
    assert [c.text for c in got.choices] == [w.text for w in want]
    assert got.usage.completion_tokens == sum(w.usage.completion_tokens for w in want)
    assert got.usage.prompt_tokens == want[0].usage.prompt_tokens
    chat = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Hi"}], n=2, max_tokens=5, temperature=0
    )
    assert len(chat.choices) == 2
    assert chat.choices[0].message.content == chat.choices[1].message.content
    with pytest.raises(BadRequestError, match="more than the 2 generations"):
        client.completions.create(model=model, prompt="Hello", n=3, max_tokens=2)
    # Streamed: the chunks of both choices, interleaved, each with its index.
    chunks = list(
        client.completions.create(
            model=model,
            prompt="Hello",
            n=2,
            seed=5,
            temperature=0.9,
            top_p=1.0,
            max_tokens=8,
            extra_body={"top_k": 0, "min_p": 0.0},
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    texts = ["", ""]
    for c in chunks:
        for choice in c.choices:
            texts[choice.index] += choice.text
    assert texts == [w.text for w in want]
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == got.usage.completion_tokens
    finishes = [ch.finish_reason for c in chunks for ch in c.choices if ch.finish_reason]
    assert len(finishes) == 2
    streamed_chat = list(
        client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "Hi"}],
            n=2,
            max_tokens=5,
            temperature=0,
            stream=True,
        )
    )
    replies = ["", ""]
    for c in streamed_chat:
        for choice in c.choices:
            replies[choice.index] += choice.delta.content or ""
    assert replies == [chat.choices[0].message.content] * 2


def test_openai_client_content_parts_user_and_include_usage(server):
    from openai import OpenAI

    client = OpenAI(base_url=server.url + "/v1", api_key="unused")
    model = "tiny-relu2.gguf"
    plain = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Hi\nthere"}],
        max_tokens=6,
        temperature=0,
    )
    # Text parts are joined with newlines; `user` is accepted.
    parts = client.chat.completions.create(
        model=model,
        messages=[
            {
                "role": "user",
                "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "there"}],
            }
        ],
        max_tokens=6,
        temperature=0,
        user="user-42",
    )
    assert parts.choices[0].message.content == plain.choices[0].message.content
    chunks = list(
        client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "Hi\nthere"}],
            max_tokens=6,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    streamed = list(
        client.completions.create(
            model=model,
            prompt="Hello",
            max_tokens=4,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert streamed[-1].choices == [] and streamed[-1].usage.prompt_tokens == 2
    # Other content part types are refused, naming the field.
    r = httpx.post(
        server.url + "/v1/chat/completions",
        json={
            "messages": [
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}
            ]
        },
    )
    assert r.status_code == 422 and "messages" in r.json()["error"]["param"]


def test_stop_and_stream_end_marker(server):
    with httpx.stream(
        "POST",
        server.url + "/v1/completions",
        json={"prompt": "Hello", "max_tokens": 5, "stream": True},
    ) as r:
        lines = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    last = json.loads(lines[-2][6:])
    assert last["choices"][0]["finish_reason"] in ("stop", "length") and "usage" in last


def test_tokenize_detokenize_and_request_id(server):
    r = httpx.post(
        server.url + "/tokenize",
        json={"content": "Hello world"},
        headers={"X-Request-ID": "abc-123"},
    )
    assert r.status_code == 200 and r.headers["x-request-id"] == "abc-123"
    tokens = r.json()["tokens"]
    r = httpx.post(server.url + "/detokenize", json={"tokens": tokens[1:]})
    assert r.json()["content"] == "Hello world"
    assert httpx.get(server.url + "/health").headers["x-request-id"]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b'{"prompt": "Hi", "temperature": -1}', 422, "temperature"),
        (b'{"prompt": []}', 422, "prompt"),
        (b'{"max_tokens": 3}', 422, "prompt: Field required"),
        (b'{"prompt": "Hi", "max_tokens": 100000}', 400, "more than the context of 4096 tokens"),
        (b'{"prompt": [1, 2, 99999]}', 400, "outside the vocabulary"),
    ],
)
def test_bad_requests(server, body, status, message):
    r = httpx.post(
        server.url + "/v1/completions", content=body, headers={"content-type": "application/json"}
    )
    assert r.status_code == status, r.text
    assert message in r.json()["error"]["message"]
    assert "Traceback" not in r.text


def test_body_too_large(server):
    r = httpx.post(server.url + "/v1/completions", json={"prompt": "x" * (2 << 20)})
    assert r.status_code == 413 and "limit is 1048576" in r.json()["error"]["message"]


def test_bad_chat_role(server):
    r = httpx.post(
        server.url + "/v1/chat/completions", json={"messages": [{"role": "robot", "content": "x"}]}
    )
    assert r.status_code == 422


def test_api_keys(tiny_relu2, tmp_path: Path):
    key_file = tmp_path / "keys"
    key_file.write_text("# keys\nfile-key\n")
    srv = Server(tiny_relu2, "--api-key", "secret-1", "--api-key-file", str(key_file))
    try:
        body = {"prompt": "Hi", "max_tokens": 1}
        assert httpx.post(srv.url + "/v1/completions", json=body).status_code == 401
        bad = httpx.post(
            srv.url + "/v1/completions", json=body, headers={"Authorization": "Bearer nope"}
        )
        assert bad.status_code == 401 and bad.headers["www-authenticate"] == "Bearer"
        for key in ("secret-1", "file-key"):
            ok = httpx.post(
                srv.url + "/v1/completions", json=body, headers={"Authorization": f"Bearer {key}"}
            )
            assert ok.status_code == 200
        assert httpx.get(srv.url + "/health").status_code == 200  # open for probes
        assert httpx.get(srv.url + "/metrics").status_code == 401
    finally:
        assert srv.stop() == 0


def test_queue_full_gives_503_with_retry_after(deep_model):
    srv = Server(deep_model, "--parallel", "1", "--queue", "1")
    try:
        long = {"prompt": "the cat sat on the mat " * 60, "max_tokens": 40}
        results: list[httpx.Response] = []

        # The five arrive together (a barrier, not a stagger: a request may take less than a
        # stagger, and then the slot is free again for the next one).
        start = threading.Barrier(5)

        def call() -> None:
            start.wait()
            results.append(httpx.post(srv.url + "/v1/completions", json=long, timeout=120))

        threads = [threading.Thread(target=call) for _ in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        codes = sorted(r.status_code for r in results)
        assert codes.count(200) >= 1 and codes.count(503) >= 2, codes
        rejected = next(r for r in results if r.status_code == 503)
        assert rejected.headers["retry-after"] == "1"
        assert "retry later" in rejected.json()["error"]["message"]
        assert srv.metric('bitnet_requests_total{endpoint="completions",outcome="rejected"}') >= 2
    finally:
        assert srv.stop() == 0


def test_disconnect_frees_the_slot_and_health_stays_live(deep_model):
    srv = Server(deep_model, "--parallel", "1")
    try:
        with httpx.stream(
            "POST",
            srv.url + "/v1/completions",
            json={"prompt": "Hello", "max_tokens": 3000, "stream": True},
            timeout=60,
        ) as r:
            lines = r.iter_lines()  # kept referenced: dropping it would close the connection
            for line in lines:
                if line.startswith("data: "):
                    break
            assert srv.metric("bitnet_in_flight") == 1
            t0 = time.perf_counter()
            assert httpx.get(srv.url + "/health", timeout=5).status_code == 200
            assert time.perf_counter() - t0 < 1.0  # answered while generating
        # Leaving the block hangs up in the middle of the stream.
        deadline = time.monotonic() + 10
        while srv.metric("bitnet_in_flight") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert srv.metric("bitnet_in_flight") == 0
        assert srv.metric('bitnet_requests_total{endpoint="completions",outcome="cancelled"}') == 1
        # The slot works again.
        assert (
            httpx.post(
                srv.url + "/v1/completions", json={"prompt": "Hi", "max_tokens": 2}
            ).status_code
            == 200
        )
    finally:
        assert srv.stop() == 0


def test_timeout_gives_504(deep_model):
    srv = Server(deep_model, "--timeout", "0.3")
    try:
        r = httpx.post(
            srv.url + "/v1/completions",
            json={"prompt": "the cat sat on the mat " * 300, "max_tokens": 5},
            timeout=60,
        )
        assert r.status_code == 504 and "deadline" in r.json()["error"]["message"]
    finally:
        assert srv.stop() == 0


def test_sigterm_drains_then_exits_0(deep_model):
    srv = Server(deep_model, "--grace", "30")
    received: list[str] = []

    def stream() -> None:
        with httpx.stream(
            "POST",
            srv.url + "/v1/completions",
            # ~2 s of generation: still running when the drain is checked below (400 tokens,
            # ~0.3 s, could finish first and let the server exit before /ready was asked).
            json={"prompt": "Hello", "max_tokens": 3000, "stream": True},
            timeout=60,
        ) as r:
            received.extend(line for line in r.iter_lines() if line.startswith("data: "))

    t = threading.Thread(target=stream)
    t.start()
    deadline = time.monotonic() + 10
    while srv.metric("bitnet_in_flight") == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    srv.proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    ready = httpx.get(srv.url + "/ready", timeout=5)
    assert ready.status_code == 503 and ready.json()["reason"] == "draining"
    refused = httpx.post(srv.url + "/v1/completions", json={"prompt": "Hi", "max_tokens": 1})
    assert refused.status_code == 503
    t.join(60)
    assert received and received[-1] == "data: [DONE]"  # the in-flight request finished
    assert srv.proc.wait(30) == 0
    srv.stop()


def test_health_answers_during_a_long_prompt(deep_model):
    srv = Server(deep_model, "--parallel", "1", "-b", "64")
    try:
        done: list[httpx.Response] = []
        prompt = "the cat sat on the mat " * 300
        t = threading.Thread(
            target=lambda: done.append(
                httpx.post(
                    srv.url + "/v1/completions",
                    json={"prompt": prompt, "max_tokens": 1},
                    timeout=120,
                )
            )
        )
        t.start()
        deadline = time.monotonic() + 10
        while srv.metric("bitnet_in_flight") == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        worst, checks = 0.0, 0
        while not done and time.monotonic() < deadline:
            t0 = time.perf_counter()
            assert httpx.get(srv.url + "/health", timeout=5).status_code == 200
            worst = max(worst, time.perf_counter() - t0)
            checks += 1
        t.join()
        assert done[0].status_code == 200
        assert checks >= 3 and worst < 1.0, (checks, worst)  # probed while the prompt ran
    finally:
        assert srv.stop() == 0


def test_cors_is_off_unless_asked(server, tiny_relu2):
    preflight = {"Origin": "https://example.org", "Access-Control-Request-Method": "POST"}
    r = httpx.options(server.url + "/v1/completions", headers=preflight)
    assert "access-control-allow-origin" not in r.headers
    srv = Server(tiny_relu2, "--cors-origin", "https://example.org")
    try:
        r = httpx.options(srv.url + "/v1/completions", headers=preflight)
        assert r.headers["access-control-allow-origin"] == "https://example.org"
    finally:
        assert srv.stop() == 0
