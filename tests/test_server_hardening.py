"""The server against hostile and unlucky clients: bad bytes, unknown names, disconnects, bursts."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bitnet.testing import generate_model
from bitnet.testing.server import ServerProcess

pytestmark = pytest.mark.slow  # starts server processes


@pytest.fixture(scope="module")
def deep_model(tmp_path_factory) -> Path:
    # 24 layers: slow enough per token that a request is still running when its client leaves.
    return generate_model(tmp_path_factory.mktemp("hard") / "deep.gguf", n_layer=24, seed=2)


@pytest.fixture(scope="module")
def server(tiny_relu2) -> Iterator[ServerProcess]:
    srv = ServerProcess(tiny_relu2, "-t", "1", "--parallel", "2", "--alias", "bitnet-tiny")
    yield srv
    assert srv.stop() == 0


def post(server: ServerProcess, path: str, body: bytes | dict, **kwargs) -> httpx.Response:
    if isinstance(body, dict):
        return httpx.post(server.url + path, json=body, timeout=60, **kwargs)
    headers = {"content-type": "application/json"}
    return httpx.post(server.url + path, content=body, headers=headers, timeout=60, **kwargs)


def assert_openai_error(r: httpx.Response, status: int, text: str) -> dict:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert text in error["message"], error
    return error


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"prompt": "\ud800 hello", "max_tokens": 2}, "text"),
        ({"prompt": "hi", "stop": ["\udfff"], "max_tokens": 2}, "stop"),
    ],
)
def test_lone_surrogates_are_a_400_and_the_connection_stays_usable(server, body, field):
    with httpx.Client(timeout=60) as client:
        # json.dumps writes lone surrogates as \ud800 escapes, as a hostile client would.
        r = client.post(
            server.url + "/v1/completions",
            content=json.dumps(body).encode(),
            headers={"content-type": "application/json"},
        )
        assert_openai_error(r, 400, f"{field}")
        assert "lone surrogate" in r.json()["error"]["message"]
        again = client.post(server.url + "/v1/completions", json={"prompt": "Hi", "max_tokens": 1})
        assert again.status_code == 200  # same keep-alive connection, no reset
    messages = {"messages": [{"role": "user", "content": "\udc80"}], "max_tokens": 1}
    r = post(server, "/v1/chat/completions", json.dumps(messages).encode())
    assert_openai_error(r, 400, "lone surrogate")
    r = post(server, "/tokenize", json.dumps({"content": "\ud83d"}).encode())
    assert_openai_error(r, 400, "lone surrogate")


def test_a_body_that_is_not_utf8_is_a_400(server):
    r = post(server, "/v1/completions", b'{"prompt": "caf\xe9"}')
    assert_openai_error(r, 400, "not valid JSON")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"prompt": "Hello", "top_k": 1_000_000_000_000}, "top_k"),
        ({"prompt": "Hello", "max_tokens": 2**31}, "max_tokens"),
        ({"prompt": "Hello", "max_tokens": "5"}, "max_tokens"),  # strict: no coercion
        ({"prompt": "Hello", "temperature": "0.5"}, "temperature"),
        ({"prompt": "Hello", "seed": 1.5}, "seed"),
        ({"prompt": "Hello", "presence_penalty": 2.5}, "presence_penalty"),
        ({"prompt": "Hello", "frequency_penalty": -2.5}, "frequency_penalty"),
        ({"prompt": [1, 2.5]}, "prompt"),
    ],
)
def test_out_of_range_and_wrong_types_are_422_naming_the_field(server, body, field):
    r = post(server, "/v1/completions", body)
    error = assert_openai_error(r, 422, field)
    assert error["param"].startswith(field)
    assert httpx.get(server.url + "/health").status_code == 200


def test_unknown_paths_and_methods_get_openai_shaped_errors(server):
    error = assert_openai_error(httpx.get(server.url + "/v1/nope"), 404, "Invalid URL")
    assert error["type"] == "invalid_request_error"
    assert_openai_error(httpx.get(server.url + "/v1/completions"), 405, "not allowed")


def test_an_unknown_model_name_is_404_model_not_found(server, tiny_relu2):
    r = post(server, "/v1/completions", {"model": "gpt-4o", "prompt": "Hi", "max_tokens": 1})
    error = assert_openai_error(r, 404, "The model `gpt-4o` does not exist")
    assert (error["code"], error["param"]) == ("model_not_found", "model")
    for name in ("bitnet-tiny", tiny_relu2.name, tiny_relu2.stem):
        body = {"model": name, "prompt": "Hi", "max_tokens": 1}
        assert post(server, "/v1/completions", body).status_code == 200, name
    chat = {"model": "x", "messages": [{"role": "user", "content": "Hi"}]}
    assert_openai_error(post(server, "/v1/chat/completions", chat), 404, "does not exist")


def test_metrics_and_openapi_say_what_they_serve(server):
    r = httpx.get(server.url + "/metrics")
    assert r.headers["content-type"].startswith("text/plain")
    spec = httpx.get(server.url + "/openapi.json").json()
    completions = spec["paths"]["/v1/completions"]["post"]["responses"]
    assert {"400", "404", "422", "503"} <= set(completions)
    assert "text/plain" in spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]


def test_a_normal_generation_is_logged_as_ok(server):
    post(server, "/v1/completions", {"prompt": "Hello", "max_tokens": 2})
    events = [
        json.loads(line)
        for line in server.log().splitlines()
        if line.startswith("{") and '"supervised_generation"' in line
    ]
    assert events and all(e["outcome"] != "cancelled" for e in events), events


def _raw_request(port: int, body: dict) -> socket.socket:
    payload = json.dumps(body).encode()
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(
        b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    return sock


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_hangs_up_frees_its_slot_at_once(deep_model, stream):
    srv = ServerProcess(deep_model, "-t", "1", "--parallel", "1")
    try:
        sock = _raw_request(srv.port, {"prompt": "Hello", "max_tokens": 3000, "stream": stream})
        deadline = time.monotonic() + 20
        while srv.metric("bitnet_in_flight") == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.3)  # well into the generation, tokens arriving all the time
        assert srv.metric("bitnet_in_flight") == 1
        sock.close()
        t0 = time.perf_counter()
        while srv.metric("bitnet_in_flight") and time.perf_counter() - t0 < 20:
            time.sleep(0.005)
        freed = time.perf_counter() - t0
        # 3000 tokens of this model take tens of seconds: the slot came back because of the
        # disconnect (measured ~10-30 ms here; the bound leaves room for a slow CI machine).
        print(f"slot freed {freed * 1000:.0f} ms after the disconnect (stream={stream})")
        assert srv.metric("bitnet_in_flight") == 0 and freed < 1.0, freed
        outcome = 'bitnet_requests_total{endpoint="completions",outcome="cancelled"}'
        assert srv.metric(outcome) == 1
    finally:
        assert srv.stop() == 0


def test_a_burst_of_64_streams_gets_200s_and_503s_only(tiny_relu2):
    srv = ServerProcess(tiny_relu2, "-t", "1", "--parallel", "2", "--queue", "4")
    try:

        async def one(client: httpx.AsyncClient) -> tuple[int, str | None]:
            body = {"prompt": "Hello", "max_tokens": 48, "stream": True, "temperature": 0}
            async with client.stream("POST", srv.url + "/v1/completions", json=body) as r:
                data = [line async for line in r.aiter_lines() if line.startswith("data: ")]
                if r.status_code == 200:
                    assert data[-1] == "data: [DONE]"
                return r.status_code, r.headers.get("retry-after")

        async def burst() -> list[tuple[int, str | None]]:
            limits = httpx.Limits(max_connections=64)
            async with httpx.AsyncClient(timeout=60, limits=limits) as client:
                return await asyncio.wait_for(
                    asyncio.gather(*(one(client) for _ in range(64))), timeout=120
                )

        results = asyncio.run(burst())
        codes = Counter(code for code, _ in results)
        print(f"burst of 64 against --parallel 2 --queue 4: {dict(codes)}")
        assert set(codes) <= {200, 503} and codes[200] >= 6, codes
        assert all(retry == "1" for code, retry in results if code == 503)
        assert httpx.get(srv.url + "/health").status_code == 200
        assert srv.metric("bitnet_in_flight") == 0 and srv.metric("bitnet_queue_depth") == 0
        assert post(srv, "/v1/completions", {"prompt": "Hi", "max_tokens": 2}).status_code == 200
    finally:
        assert srv.stop() == 0
