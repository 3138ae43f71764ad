"""An OpenAI-compatible HTTP server (FastAPI + uvicorn) in front of RuntimeSupervisor.

``bitnet serve --model m.gguf`` (or ``run_inference_server.py``) serves
``/v1/completions``, ``/v1/chat/completions`` (streamed as server-sent events or not),
``/v1/models``, ``/tokenize``, ``/detokenize``, ``/health``, ``/ready`` and ``/metrics``.

It comes with the ``server`` extra: ``pip install "bitnet-cpu[server]"``. The modules:
``settings`` (ServerConfig), ``schemas`` (request/response shapes, errors), ``app`` (routes),
``completions`` (generation and OpenAI's answer shapes), ``guard`` (auth, limits, access log),
``metrics`` (Prometheus), ``state`` (load, drain) and ``serve`` (socket, uvicorn).
"""

from __future__ import annotations

import importlib.util

from .settings import ServerConfig

_MISSING = [
    name
    for name in ("fastapi", "uvicorn", "sse_starlette", "prometheus_client")
    if importlib.util.find_spec(name) is None
]
if _MISSING:
    raise ImportError(
        f"bitnet's HTTP server needs {', '.join(_MISSING)}, which come with the server extra: "
        'pip install "bitnet-cpu[server]"',
        name=_MISSING[0],
    )

from .app import create_app  # noqa: E402  (after the check, which explains a missing extra)
from .serve import listen_socket, serve  # noqa: E402

__all__ = ["ServerConfig", "create_app", "listen_socket", "serve"]
