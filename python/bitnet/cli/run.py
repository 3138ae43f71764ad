"""``bitnet run``: generate from a prompt (streamed to the terminal, or as JSON), chat on
stdin with ``--conversation``, or print the plan and diagnostics without generating."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..options import SamplingOptions
from .common import add_model_arguments, runtime_from, setup_logging
from .exits import EXIT_INTERRUPTED, EXIT_OK, EXIT_PROBLEMS, command_parser
from .flags import add_arguments, from_arguments


def add_parser(sub: Any) -> None:
    p = command_parser(
        sub,
        "run",
        help="generate text from a prompt (or chat with --conversation)",
        description="Generate text, streamed to the terminal as it comes.",
    )
    add_model_arguments(p, model_required=True)
    p.add_argument("-p", "--prompt", help="the prompt (with --conversation: a first message)")
    add_arguments(p, SamplingOptions)
    p.add_argument(
        "--conversation",
        "-cnv",
        action="store_true",
        help="chat: read messages from stdin, one per line, until EOF",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="resolve and print the plan without loading weights"
    )
    p.add_argument("--diagnostics", action="store_true", help="print diagnostics")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--telemetry-file",
        default=None,
        metavar="PATH",
        help="also write this run's events (model_load, generation, dry_run, missing_artifact) as "
        "bitnet.telemetry/1 JSON lines to PATH, appended; '-' for stderr",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    setup_logging(args)
    if args.telemetry_file is None:
        return _run(args)
    from ..telemetry import TelemetryHub

    with TelemetryHub(sink=args.telemetry_file):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    runtime = runtime_from(args)
    sampling = from_arguments(SamplingOptions, args)
    if args.dry_run or args.diagnostics:
        run_args = {"prompt": args.prompt, "sampling": sampling}
        return _report(
            runtime, run_args, dry_run=args.dry_run, diagnostics=args.diagnostics, as_json=args.json
        )
    if args.prompt is None and not args.conversation:
        raise ValueError("--prompt is required (or use --conversation, --dry-run, --diagnostics)")
    if args.prompt is not None:
        _check_text(args.prompt, "--prompt")
    model = runtime.load(seed=sampling.seed)
    try:
        if args.conversation:
            return _conversation(model, args.prompt, sampling)
        if args.json:
            result = runtime.generate(model, args.prompt, sampling)
            print(json.dumps(_result_dict(result), ensure_ascii=False))
            return EXIT_OK
        return _stream_to_terminal(model, args.prompt, sampling)
    finally:
        model.close()


def _check_text(text: str, flag: str) -> None:
    """Arguments and stdin come as bytes; Python keeps the ones that are not UTF-8 as lone
    surrogates. Such text is refused (exit 2) rather than silently changed."""
    from ._native import _core

    _core.model.check_text(text, flag)


def _check_text(text: str, flag: str) -> None:
    """Arguments and stdin come as bytes; Python keeps the ones that are not UTF-8 as lone
    surrogates. Such text is refused (exit 2) rather than silently changed."""
    from .._native import _core

    _core.model.check_text(text, flag)


def _stream_to_terminal(model: Any, prompt: Any, sampling: SamplingOptions) -> int:
    from ..runtime.runtime import run_generation

    stream = model.stream(prompt, sampling)

    def consume() -> Any:
        for piece in stream:
            sys.stdout.write(piece)
            sys.stdout.flush()
        result = stream.result
        if result is not None and result.logprobs is not None:
            sys.stdout.write("\n")
            print(_logprob_table(result.logprobs), file=sys.stderr)
        return result

    try:
        run_generation(model, consume, sampling)
    except KeyboardInterrupt:
        stream.close()
        sys.stdout.write("\n")
        print("[interrupted]", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        stream.close()  # nobody reads the rest: stop generating it
        raise
    sys.stdout.write("\n")
    return EXIT_OK


def _conversation(model: Any, first: str | None, sampling: SamplingOptions) -> int:
    """A chat on stdin/stdout. Ctrl-C stops the reply being written; at the prompt it exits."""
    messages: list[dict[str, str]] = []
    interactive = sys.stdin.isatty()
    pending = [first] if first else []
    while True:
        if pending:
            line = pending.pop()
        else:
            try:
                if interactive:
                    sys.stdout.write("> ")
                    sys.stdout.flush()
                raw = sys.stdin.buffer.readline()
            except KeyboardInterrupt:
                sys.stdout.write("\n")
                return EXIT_INTERRUPTED
            if not raw:
                return EXIT_OK
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as exc:
                # One bad line does not end the chat; nothing is sent for it.
                print(
                    f"[this line is not UTF-8 text (byte 0x{raw[exc.start]:02x} at "
                    f"{exc.start}); it was not sent]",
                    file=sys.stderr,
                )
                continue
            if not line.strip():
                continue
        messages.append({"role": "user", "content": line})
        stream = model.stream_chat(messages, sampling)
        reply = []
        try:
            for piece in stream:
                reply.append(piece)
                sys.stdout.write(piece)
                sys.stdout.flush()
        except KeyboardInterrupt:
            stream.close()
            sys.stdout.write(" [stopped]")
        sys.stdout.write("\n")
        sys.stdout.flush()
        messages.append({"role": "assistant", "content": "".join(reply)})


def _report(
    runtime: Any, run_args: dict[str, Any], *, dry_run: bool, diagnostics: bool, as_json: bool
) -> int:
    from ..errors import ModelLoadError, UnsupportedCPUError

    out: dict[str, Any] = {}
    ok = True
    if diagnostics:
        diag = runtime.diagnostics()
        ok = diag.ok
        out["diagnostics"] = diag.to_dict() if as_json else str(diag)
    if dry_run:
        try:
            plan = runtime.dry_run(**run_args)
            out["plan"] = plan.to_dict() if as_json else str(plan)
        except (ModelLoadError, UnsupportedCPUError, ValueError) as exc:
            ok = False
            out["plan"] = {"error": str(exc)} if as_json else f"error: {exc}"
    if as_json:
        out["ok"] = ok
        print(json.dumps(out, indent=2))
    else:
        print("\n\n".join(str(v) for v in out.values()))
    return EXIT_OK if ok else EXIT_PROBLEMS


def _logprob_table(entries: Any) -> str:
    """--logprobs on a terminal: one line per token (its text, log-probability, alternatives)."""
    lines = ["logprob   token          most likely"]
    for e in entries:
        top = "  ".join(f"{t.text!r} {t.logprob:.2f}" for t in e.top)
        lines.append(f"{e.logprob:8.3f}  {e.text!r:<14} {top}".rstrip())
    return "\n".join(lines)


def _logprob_dict(entry: Any) -> dict[str, Any]:
    return {
        "token": entry.token,
        "text": entry.text,
        "logprob": entry.logprob,
        "top": [{"token": t.token, "text": t.text, "logprob": t.logprob} for t in entry.top],
    }


def _result_dict(result: Any) -> dict[str, Any]:
    logprobs = None
    if result.logprobs is not None:
        logprobs = [_logprob_dict(e) for e in result.logprobs]
    return {
        "text": result.text,
        "finish_reason": result.finish_reason,
        "tokens": result.tokens,
        "usage": {
            "prompt_tokens": result.usage.prompt_tokens,
            "completion_tokens": result.usage.completion_tokens,
            "total_tokens": result.usage.total_tokens,
        },
        "timings": {
            "prompt_ms": result.timings.prompt_ms,
            "generation_ms": result.timings.generation_ms,
            "prompt_tokens_per_second": result.timings.prompt_tokens_per_second,
            "generation_tokens_per_second": result.timings.generation_tokens_per_second,
        },
        **({"logprobs": logprobs} if logprobs is not None else {}),
    }
