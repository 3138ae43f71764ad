"""The HTTP API's request and response shapes (pydantic), and its errors in OpenAI's shape.

The sampling fields of the completion requests are derived from
:class:`bitnet.options.SamplingOptions` (type, bounds, description); the server's own defaults
(``temperature`` and ``top_p`` 1.0, ``max_tokens`` whatever fits the context) are OpenAI's.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model

from ..grammar import JSON_OBJECT_SCHEMA, MAX_GRAMMAR_BYTES
from ..options import (
    MAX_LOGIT_BIAS,
    MAX_SEQUENCES,
    Option,
    SamplingOptions,
    server_default,
)
from ..tools import tool_grammar, tool_messages

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
        # Each text's length (and its Unicode) is checked by the option: a 400 saying where.
        annotation, default = str | Annotated[list[str], Field(max_length=int(opt.high))], None
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
    elif opt.kind == "grammar":
        annotation = Annotated[str, Field(max_length=MAX_GRAMMAR_BYTES)]
    elif opt.kind == "schema":
        annotation = dict[str, Any]
    elif opt.kind == "count":
        annotation = _integer(int(opt.low or 0), int(opt.high or 0))
    else:
        raise TypeError(f"no request field for a {opt.kind!r} option ({f.name})")
    if default is None:
        annotation = annotation | None
    return annotation, Field(default=default, description=opt.help, **bounds)


# One request field per SamplingOptions field: adding a sampling option adds it here.
SamplingFields: type[BaseModel] = create_model(  # type: ignore[call-overload]
    "SamplingFields",
    __config__=_STRICT,
    **{f.name: _sampling_field(f, opt) for f, opt in SamplingOptions.options() if opt.server_field},
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

    @property
    def tool_mode(self) -> bool:
        """The answer is read for tool calls (chat with tools and tool_choice other than none)."""
        return False


def _option_field(name: str) -> Any:
    """The request field of a SamplingOptions field the endpoint spells as the option does."""
    for f, opt in SamplingOptions.options():
        if f.name == name:
            return _sampling_field(f, opt)
    raise KeyError(name)


_LOGPROBS_ANNOTATION, _LOGPROBS_FIELD = _option_field("logprobs")


class CompletionRequest(_Sampling):
    # "" is a prompt (generation starts from BOS, as OpenAI's API allows); [] is not. The text is
    # not constrained here: text that is not valid Unicode gets its own 400 when tokenized.
    prompt: str | Annotated[list[Integer], Field(min_length=1)]
    logprobs: _LOGPROBS_ANNOTATION = _LOGPROBS_FIELD  # type: ignore[valid-type]

    def sampling(self) -> dict[str, Any]:
        return {**super().sampling(), "logprobs": self.logprobs}


class TextPart(BaseModel):
    """One part of a message's content as a list (what clients send for multi-part messages);
    only text parts: a model of text reads no images."""

    type: Literal["text"]
    text: str


_FunctionName = Annotated[str, Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")]


class CalledFunction(BaseModel):
    name: _FunctionName
    arguments: str = Field(description="the arguments as JSON text")


class MessageToolCall(BaseModel):
    """A call an earlier assistant turn made (sent back with the conversation)."""

    id: str
    type: Literal["function"] = "function"
    function: CalledFunction


class ChatMessage(BaseModel):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    # None only for an assistant turn that made tool calls.
    content: str | Annotated[list[TextPart], Field(min_length=1)] | None = None
    tool_calls: list[MessageToolCall] | None = None
    tool_call_id: str | None = None
    name: str | None = None

    def check(self, index: int) -> None:
        """400 for what the schema cannot say: content may be left out only by an assistant
        turn that made tool calls, and only assistant turns make them."""
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise HTTPError(
                400,
                f"messages[{index}] ({self.role}) needs content",
                "invalid_request_error",
                param=f"messages[{index}].content",
            )
        if self.tool_calls and self.role != "assistant":
            raise HTTPError(
                400,
                f"messages[{index}] ({self.role}) carries tool_calls; only assistant turns do",
                "invalid_request_error",
                param=f"messages[{index}].tool_calls",
            )

    def text(self) -> str:
        """The content as text: list parts joined with newlines, as llama.cpp's server does."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(part.text for part in self.content)

    def turn(self) -> dict[str, Any]:
        """The message as bitnet.tools.tool_messages takes it ("developer" is a system turn)."""
        out: dict[str, Any] = {
            "role": "system" if self.role == "developer" else self.role,
            "content": self.text(),
        }
        if self.tool_calls:
            out["tool_calls"] = [c.model_dump() for c in self.tool_calls]
        return out


class FunctionDefinition(BaseModel):
    name: _FunctionName
    description: str | None = None
    parameters: dict[str, Any] | None = Field(
        default=None, description="a JSON Schema of the arguments object (none: no arguments)"
    )
    strict: bool | None = Field(default=None, description="accepted; arguments always follow it")


class Tool(BaseModel):
    type: Literal["function"]
    function: FunctionDefinition


class ChosenFunction(BaseModel):
    name: _FunctionName


class NamedToolChoice(BaseModel):
    type: Literal["function"]
    function: ChosenFunction


class JSONSchemaFormat(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    name: Annotated[str, Field(max_length=64)] = "response"
    description: str | None = None
    schema_: dict[str, Any] | None = Field(
        default=None, alias="schema", description="the JSON Schema (none: any JSON value)"
    )
    strict: bool | None = Field(default=None, description="accepted; output always follows it")


class ResponseFormat(BaseModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    logprobs: bool = Field(
        default=False, description="return each generated token's log-probability"
    )
    top_logprobs: _integer(0, 20) | None = Field(
        default=None, description="with logprobs: this many most likely tokens at each position"
    )
    response_format: ResponseFormat | None = Field(
        default=None,
        description='{"type": "json_object"} (JSON mode) or {"type": "json_schema", '
        '"json_schema": {"schema": ...}}: the reply is JSON that parses (and validates)',
    )
    tools: Annotated[list[Tool], Field(max_length=128)] | None = Field(
        default=None, description="functions the model may call (answered as message.tool_calls)"
    )
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = Field(
        default=None, description='"auto" (default with tools), "none", "required" or a function'
    )
    parallel_tool_calls: bool = Field(
        default=True, description="allow more than one call in an answer"
    )

    @property
    def tool_mode(self) -> bool:
        return bool(self.tools) and self._tool_choice() != "none"

    def _tool_choice(self) -> Any:
        choice = self.tool_choice if self.tool_choice is not None else "auto"
        return choice.model_dump() if isinstance(choice, NamedToolChoice) else choice

    def turns(self) -> list[dict[str, Any]]:
        """The messages as plain turns for the chat template (tool calls and results as text,
        the tools described in the system turn)."""
        for i, message in enumerate(self.messages):
            message.check(i)
        tools = [t.model_dump() for t in self.tools] if self.tools else None
        return tool_messages([m.turn() for m in self.messages], tools, self._tool_choice())

    def sampling(self) -> dict[str, Any]:
        base = super().sampling()
        out = dict(base)
        if self.top_logprobs is not None and not self.logprobs:
            message = "top_logprobs needs logprobs: true"
            raise HTTPError(400, message, "invalid_request_error", param="top_logprobs")
        out["logprobs"] = (self.top_logprobs or 0) if self.logprobs else None
        if self.tool_choice is not None and not self.tools:
            raise HTTPError(
                400, "tool_choice needs tools", "invalid_request_error", param="tool_choice"
            )
        constraints = [name for name in ("grammar", "json_schema") if name in base]
        fmt = self.response_format
        if fmt is not None and fmt.type == "json_schema" and fmt.json_schema is None:
            message = 'response_format of type "json_schema" needs a json_schema object'
            raise HTTPError(400, message, "invalid_request_error", param="response_format")
        if fmt is not None and fmt.type != "text":
            constraints.append("response_format")
            schema = fmt.json_schema.schema_ if fmt.json_schema is not None else None
            schema = JSON_OBJECT_SCHEMA if fmt.type == "json_object" else schema
            out["json_schema"] = dict(schema) if schema is not None else {}
        if self.tool_mode:
            constraints.append("tools")
            tools = [t.model_dump() for t in self.tools or []]
            try:
                out["grammar"] = tool_grammar(tools, self._tool_choice(), self.parallel_tool_calls)
            except ValueError as exc:
                raise HTTPError(400, str(exc), "invalid_request_error", param="tools") from None
        if len(constraints) > 1:
            raise HTTPError(
                400,
                f"{' and '.join(constraints)} cannot both constrain the answer; keep one",
                "invalid_request_error",
                param=constraints[-1],
            )
        return out


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
