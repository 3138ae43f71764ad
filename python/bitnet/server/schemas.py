"""The HTTP API's request and response shapes (pydantic), and its errors in OpenAI's shape.

The sampling fields of the completion requests are derived from
:class:`bitnet.options.SamplingOptions` (type, bounds, description); the server's own defaults
(``temperature`` and ``top_p`` 1.0, ``max_tokens`` whatever fits the context) are OpenAI's.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model

from ..options import MAX_LOGIT_BIAS, MAX_SEQUENCES, Option, SamplingOptions, server_default

__all__ = [
    "ChatCompletionRequest",
    "ChatMessage",
    "CompletionRequest",
    "DetokenizeRequest",
    "ErrorResponse",
    "HTTPError",
    "TokenizeRequest",
]


# Requests are validated strictly: "5" is not a number and 1.5 is not an integer (a client that
# sends them learns it from a 422). JSON Schema, which the OpenAPI document speaks, counts 2.0
# as an integer, so integer fields take it, as the document promises.
_STRICT = ConfigDict(extra="ignore", strict=True)


def _integral_float(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _integer(low: int, high: int) -> Any:
    """An int in [low, high]; the bounds come first so that the document states them."""
    return Annotated[int, Field(ge=low, le=high), BeforeValidator(_integral_float)]


Integer = Annotated[int, BeforeValidator(_integral_float)]


def _sampling_field(f: dataclasses.Field[Any], opt: Option) -> tuple[Any, Any]:
    """The request field of one SamplingOptions field: its JSON type, bounds and default."""
    default = server_default(f, opt)
    bounds: dict[str, Any] = {}
    if opt.kind == "int":
        annotation: Any = _integer(int(opt.low or 0), int(opt.high or 0))
    elif opt.kind == "float":
        annotation = float
        bounds = {"gt" if opt.low_open else "ge": opt.low, "le": opt.high, "allow_inf_nan": False}
    elif opt.kind == "texts":
        annotation, default = str | list[str], None
    elif opt.kind == "seed":
        annotation = Integer  # any integer: its low 32 bits seed the sampler
    elif opt.kind == "bias":  # OpenAI's shape: token ids as JSON object keys
        bias = Annotated[float, Field(ge=-MAX_LOGIT_BIAS, le=MAX_LOGIT_BIAS, allow_inf_nan=False)]
        # Keys are checked by the option (a 400 naming the key): JSON Schema's propertyNames is
        # not honoured by every client generator.
        annotation = Annotated[dict[str, bias], Field(max_length=1024)]
        default = None
    elif opt.kind == "bool":
        annotation = bool
    else:
        raise TypeError(f"no request field for a {opt.kind!r} option ({f.name})")
    if default is None:
        annotation = annotation | None
    return annotation, Field(default=default, description=opt.help, **bounds)


# One request field per SamplingOptions field: adding a sampling option adds it here.
SamplingFields: type[BaseModel] = create_model(  # type: ignore[call-overload]
    "SamplingFields",
    __config__=_STRICT,
    **{f.name: _sampling_field(f, opt) for f, opt in SamplingOptions.options()},
)


class StreamOptions(BaseModel):
    model_config = _STRICT

    include_usage: bool = False


class _Sampling(SamplingFields):  # type: ignore[misc, valid-type]
    model: str | None = Field(
        default=None,
        description="the served model's id (GET /v1/models), its file name or stem, or --alias",
    )
    stream: bool = False
    stream_options: StreamOptions | None = Field(
        default=None, description="with stream=true: include_usage adds a last chunk with usage"
    )
    n: _integer(1, MAX_SEQUENCES) = Field(
        default=1,
        description="choices to generate: they run together as sequences of the model (at most "
        "--parallel; with a seed, choice i uses seed + i)",
    )
    user: Annotated[str, Field(max_length=256)] | None = Field(
        default=None, description="an end-user id (accepted as OpenAI's; not used)"
    )

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage

    def sampling(self) -> dict[str, Any]:
        """The SamplingOptions fields this request sets (None: the library's default)."""
        return {
            name: value
            for name in SamplingFields.model_fields
            if (value := getattr(self, name)) is not None
        }


class CompletionRequest(_Sampling):
    # "" is a prompt (generation starts from BOS, as OpenAI's API allows); [] is not. The text is
    # not constrained here: text that is not valid Unicode gets its own 400 when tokenized.
    prompt: str | Annotated[list[Integer], Field(min_length=1)]


class TextPart(BaseModel):
    """One part of a message's content as a list (what clients send for multi-part messages);
    only text parts: a model of text reads no images."""

    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str | Annotated[list[TextPart], Field(min_length=1)]

    def text(self) -> str:
        """The content as text: list parts joined with newlines, as llama.cpp's server does."""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(part.text for part in self.content)


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)


class TokenizeRequest(BaseModel):
    model_config = _STRICT

    content: str
    add_special: bool = True


class DetokenizeRequest(BaseModel):
    model_config = _STRICT

    tokens: list[Integer]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: int | str | None = None


class ErrorResponse(BaseModel):
    """Every error, in the shape OpenAI's API and client libraries use."""

    error: ErrorDetail


class HTTPError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        kind: str,
        headers: dict[str, str] | None = None,
        *,
        code: int | str | None = None,
        param: str | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.kind, self.headers = status, message, kind, headers or {}
        self.code = status if code is None else code
        self.param = param


def error_body(
    message: str, kind: str, code: int | str, param: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries of the error statuses a route can answer with."""
    reasons = {
        400: "invalid request (bad JSON, text that is not valid Unicode, a prompt too long)",
        401: "missing or invalid API key (only when keys are configured)",
        404: "unknown model name (code model_not_found)",
        411: "a POST body without Content-Length",
        413: "the request body is larger than --max-body-bytes",
        422: "a field of the wrong type or out of range",
        503: "loading, draining, or the queue is full (see Retry-After)",
        504: "the request's deadline passed before anything was sent",
    }
    return {code: {"model": ErrorResponse, "description": reasons[code]} for code in statuses}


POST_ERRORS = (400, 401, 411, 413, 422, 503)
# With "stream": true the answer is server-sent events (chunks, then "data: [DONE]").
STREAMED: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the completion (JSON), or with stream=true server-sent events",
        "content": {
            "application/json": {},
            "text/event-stream": {
                "schema": {  # one event
                    "type": "object",
                    "properties": {
                        "event": {"type": "string"},
                        "data": {"type": "string", "description": "a JSON chunk, or [DONE]"},
                    },
                    "required": ["data"],
                }
            },
        },
    }
}
