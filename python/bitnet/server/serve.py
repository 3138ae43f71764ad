"""Running the server: bind the socket first (a busy port fails before the model loads), then
uvicorn until SIGTERM/SIGINT."""

from __future__ import annotations

import errno
import logging
import socket

from ..errors import ListenError
from .app import create_app
from .settings import ServerConfig

__all__ = ["listen_socket", "serve"]


def listen_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` and listening, or ListenError saying why not and what
    to change. Binding before the model loads makes a busy port fail at once."""
    where = f"{host}:{port}"
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        raise ListenError(f"cannot listen on {where}: {exc}; check --host") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            hint = "another process uses this port: choose another --port or stop that process"
        elif exc.errno == errno.EACCES:
            hint = "ports below 1024 need privileges: choose a --port from 1024 up"
        else:
            hint = "check --host and --port"
        raise ListenError(f"cannot listen on {where}: {exc.strerror}; {hint}") from None
    return sock


def serve(
    config: ServerConfig,
    *,
    log_format: str = "json",
    log_level: str = "info",
    sock: socket.socket | None = None,
) -> int:
    """Run the server until SIGTERM/SIGINT; returns the exit code (0 after a clean drain).
    ``sock``: an already listening socket (see :func:`listen_socket`); default: bind one for
    ``config.host``/``config.port`` (ListenError when that fails)."""
    import uvicorn

    from ..events import JsonLinesFormatter

    handler = logging.StreamHandler()
    handler.setFormatter(
        JsonLinesFormatter()
        if log_format == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    handler.setLevel(log_level.upper())  # the telemetry hub may open bitnet.events up to INFO
    for name in ("bitnet.access", "bitnet.server", "bitnet.events"):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(log_level.upper())
        logger.propagate = False
    try:
        app = create_app(config)  # ValueError: a --telemetry-file it cannot write
    except BaseException:
        if sock is not None:
            sock.close()
        raise
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=config.host,
            port=config.port,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=int(config.grace) + 5,
            lifespan="on",
        )
    )
    app.state.bitnet.uvicorn_server = server
    if sock is None:
        sock = listen_socket(config.host, config.port)
    with sock:
        server.run(sockets=[sock])
    return 0
