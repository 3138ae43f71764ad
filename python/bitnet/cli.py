"""The ``bitnet`` command line (also ``python -m bitnet`` and ``run_inference.py``).

Exit codes: 0 success; 1 engine or runtime failure; 2 bad arguments; 3 model file problem;
4 unsupported CPU; 5 a dry run or diagnostics found problems; 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["EXIT_CODES", "build_parser", "main"]

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_MODEL, EXIT_CPU, EXIT_PROBLEMS = 0, 1, 2, 3, 4, 5
EXIT_INTERRUPTED, EXIT_BROKEN_PIPE = 130, 141  # 128 + SIGINT, 128 + SIGPIPE, as a shell says
EXIT_CODES = {
    EXIT_OK: "success",
    EXIT_ERROR: "engine or runtime failure",
    EXIT_USAGE: "bad arguments or values (serve: also an address it cannot listen on)",
    EXIT_MODEL: "model file missing, unreadable, truncated, damaged or unsupported",
    EXIT_CPU: "this CPU lacks an instruction set the native libraries need",
    EXIT_PROBLEMS: "a dry run or diagnostics found problems",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C)",
    EXIT_BROKEN_PIPE: "standard output was closed early (e.g. piped into head)",
}
# The exit codes each command can end with (tools/check_docs_sync.py holds the docs to them).
_COMMON_EXITS = (EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED)
COMMAND_EXIT_CODES: dict[str, tuple[int, ...]] = {
    "run": (*_COMMON_EXITS, EXIT_MODEL, EXIT_CPU, EXIT_PROBLEMS, EXIT_BROKEN_PIPE),
    # diagnose reports a CPU or model problem as a problem (5); it does not fail on it.
    "diagnose": (*_COMMON_EXITS, EXIT_PROBLEMS),
    "bench": (*_COMMON_EXITS, EXIT_MODEL),
    "setup": (*_COMMON_EXITS, EXIT_MODEL),
    "serve": (*_COMMON_EXITS, EXIT_MODEL, EXIT_CPU),
    "inspect": (*_COMMON_EXITS, EXIT_MODEL),
    "convert": (*_COMMON_EXITS, EXIT_MODEL),
    "generate-model": _COMMON_EXITS,
}


def _epilog(command: str | None = None) -> str:
    """The exit codes of ``command`` (all of them for the top-level help), one per line."""
    codes = COMMAND_EXIT_CODES[command] if command else EXIT_CODES
    return "exit codes:\n" + "\n".join(f"  {code:<4} {EXIT_CODES[code]}" for code in sorted(codes))


def _threads(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be 'auto' or an integer, got {value!r}") from None


def _add_kernels_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--kernels",
        choices=["auto", "bitnet", "ggml"],
        default="auto",
        help="auto: our ternary kernels where the CPU has a SIMD path for them, else ggml's",
    )


def _add_runtime_args(p: argparse.ArgumentParser, *, model_required: bool) -> None:
    p.add_argument("-m", "--model", required=model_required, help="GGUF model file")
    p.add_argument(
        "-t",
        "--threads",
        type=_threads,
        default="auto",
        help="generation threads: 'auto' (one per usable physical core) or N",
    )
    p.add_argument(
        "--threads-batch",
        type=_threads,
        default=None,
        help="prompt-processing threads (default: as --threads)",
    )
    p.add_argument("-c", "--ctx-size", type=int, default=4096, help="context size (default 4096)")
    p.add_argument(
        "-b",
        "--batch-size",
        type=int,
        default=512,
        help="most prompt tokens per step (default 512)",
    )
    p.add_argument(
        "--engine",
        choices=["auto", "bitnet", "llama"],
        default="auto",
        help="auto: BitNetEngine for BitNet architectures, libllama for the rest",
    )
    _add_kernels_arg(p)
    p.add_argument("--sha256", default=None, help="expected sha256 of the model file")
    p.add_argument(
        "--log-format",
        choices=["text", "json"],
        default="text",
        help="stderr logs and events as text or as JSON lines",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log events and native messages")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bitnet",
        description="Run BitNet b1.58 ternary language models on CPU.",
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser(
        "run",
        epilog=_epilog("run"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="generate text from a prompt (or chat with --conversation)",
        description="Generate text, streamed to the terminal as it comes.",
    )
    _add_runtime_args(run, model_required=True)
    run.add_argument("-p", "--prompt", help="the prompt (with --conversation: a first message)")
    run.add_argument("-n", "--n-predict", type=int, default=128, help="most tokens to generate")
    run.add_argument("--temperature", "--temp", type=float, default=0.8, help="0 is greedy")
    run.add_argument("--top-p", type=float, default=0.95)
    run.add_argument("--top-k", type=int, default=40)
    run.add_argument("--min-p", type=float, default=0.05)
    run.add_argument("--repeat-penalty", type=float, default=1.0)
    run.add_argument("--stop", action="append", default=None, help="stop string (repeatable)")
    run.add_argument("-s", "--seed", type=int, default=None, help="sampling seed")
    run.add_argument(
        "--conversation",
        "-cnv",
        action="store_true",
        help="chat: read messages from stdin, one per line, until EOF",
    )
    run.add_argument(
        "--dry-run", action="store_true", help="resolve and print the plan without loading weights"
    )
    run.add_argument("--diagnostics", action="store_true", help="print diagnostics")
    run.add_argument("--json", action="store_true", help="machine-readable output")
    run.set_defaults(func=_run)

    diag = sub.add_parser(
        "diagnose",
        epilog=_epilog("diagnose"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="check this machine and a model file",
        description="Report the build, CPU, memory, model file and problems.",
    )
    _add_runtime_args(diag, model_required=False)
    diag.add_argument(
        "--json", action="store_true", help="JSON output (schema bitnet.diagnostics/1)"
    )
    diag.set_defaults(func=_diagnose)

    bench = sub.add_parser(
        "bench",
        epilog=_epilog("bench"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="quick prompt/generation tokens/s measurement",
        description="Median pp/tg tokens/s of BitNetEngine on a model (or on a generated one).",
    )
    bench.add_argument("-m", "--model", default=None, help="GGUF file (default: generate one)")
    bench.add_argument(
        "--shape",
        choices=["tiny", "2b4t"],
        default="tiny",
        help="shape of the generated model when --model is absent",
    )
    bench.add_argument("-t", "--threads", type=int, nargs="+", default=[1, 2])
    bench.add_argument("-p", "--n-prompt", type=int, default=128)
    bench.add_argument("-n", "--n-gen", type=int, default=64)
    bench.add_argument("-r", "--repeats", type=int, default=3)
    bench.add_argument("--engine", choices=["auto", "bitnet", "llama"], default="auto")
    _add_kernels_arg(bench)
    bench.add_argument("--json", action="store_true")
    bench.set_defaults(func=_bench)

    setup = sub.add_parser(
        "setup",
        epilog=_epilog("setup"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="set up a model: check, acquire, convert, verify, warm up (resumable)",
        description="The bootstrapper (same as setup_env.py): environment check, model "
        "acquisition (--from PATH or the Hugging Face hub), conversion to the fast format, "
        "verification and warm-up, each recorded in <cache-dir>/bootstrap-state.json so a "
        "rerun skips finished stages.",
    )
    from .bootstrap import add_arguments as _setup_arguments

    _setup_arguments(setup)
    setup.set_defaults(func=_setup)

    srv = sub.add_parser(
        "serve",
        epilog=_epilog("serve"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="OpenAI-compatible HTTP server",
        description="Serve /v1/completions, /v1/chat/completions, /v1/models, "
        "/tokenize, /detokenize, /health, /ready and /metrics.",
    )
    srv.add_argument("-m", "--model", required=True, help="GGUF model file")
    srv.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    srv.add_argument("--port", type=int, default=8080)
    srv.add_argument(
        "--parallel",
        "-np",
        type=int,
        default=1,
        help="generations at once, each with its own KV cache (weights shared)",
    )
    srv.add_argument(
        "--queue",
        type=int,
        default=16,
        help="requests that may wait for a slot; beyond it: 503 with Retry-After",
    )
    srv.add_argument("-b", "--batch-size", type=int, default=512, help="prompt tokens per step")
    srv.add_argument("-c", "--ctx-size", type=int, default=4096, help="context per slot")
    srv.add_argument("-t", "--threads", type=_threads, default="auto")
    srv.add_argument("--threads-batch", type=_threads, default=None)
    _add_kernels_arg(srv)
    srv.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="per-request deadline in seconds (504 if nothing was sent yet)",
    )
    srv.add_argument(
        "--api-key",
        action="append",
        default=[],
        help="accepted Bearer key (repeatable); /health and /ready stay open",
    )
    srv.add_argument("--api-key-file", default=None, help="file with one API key per line")
    srv.add_argument(
        "--max-body-bytes",
        type=int,
        default=1 << 20,
        help="larger request bodies get 413 (default 1 MiB)",
    )
    srv.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        help="allowed CORS origin (repeatable; CORS is off without it)",
    )
    srv.add_argument(
        "--grace",
        type=float,
        default=30.0,
        help="seconds running requests get to finish after SIGTERM",
    )
    srv.add_argument("--alias", default=None, help="model id reported by /v1/models")
    srv.add_argument(
        "--log-format",
        choices=["text", "json"],
        default="json",
        help="access and event logs on stderr (default json lines)",
    )
    srv.set_defaults(func=_serve)

    ins = sub.add_parser(
        "inspect",
        epilog=_epilog("inspect"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="show a GGUF file's metadata and tensor table",
        description="Architecture, shapes, tensor types, tokenizer and chat "
        "template of a GGUF file (official I2_S files included).",
    )
    ins.add_argument("path", help="GGUF file")
    ins.add_argument("--json", action="store_true", help="machine-readable output")
    ins.set_defaults(func=_inspect)

    conv = sub.add_parser(
        "convert",
        epilog=_epilog("convert"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="convert between BitNet GGUF layouts",
        description="Official I2_S GGUF <-> the project's format (arch bitnet, "
        "TQ2_0/TQ1_0). The output is written to DST.tmp and renamed at the end; "
        "the input is never modified.",
    )
    conv.add_argument("src", help="input GGUF file, or a Hugging Face checkpoint folder")
    conv.add_argument("dst", help="output GGUF file")
    conv.add_argument(
        "--type",
        choices=["tq2_0", "tq1_0", "i2_s"],
        default="tq2_0",
        help="ternary tensor type of the output (default tq2_0)",
    )
    conv.add_argument(
        "--embedding-type",
        choices=["f16", "q8_0", "q6_k", "q4_0"],
        default="f16",
        help="type of token_embd/output (default f16, kept as it is)",
    )
    conv.add_argument("--force", action="store_true", help="overwrite an existing DST")
    conv.set_defaults(func=_convert)

    gen = sub.add_parser(
        "generate-model",
        epilog=_epilog("generate-model"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="write a BitNet GGUF with random ternary weights (for tests and benchmarks)",
        description="Write a real-format BitNet GGUF (arch 'bitnet') with random ternary "
        "weights and a small byte-level BPE vocabulary. The text it generates is nonsense; "
        "shapes, formats and speed are real.",
    )
    gen.add_argument("path", help="output .gguf file")
    gen.add_argument(
        "--shape",
        choices=["tiny", "2b4t"],
        default="tiny",
        help="tiny: hidden 256, 2 layers (default); 2b4t: BitNet b1.58 2B-4T shapes",
    )
    gen.add_argument(
        "--activation",
        choices=["relu2", "silu"],
        default="relu2",
        help="FFN activation written to bitnet.hidden_activation (default relu2)",
    )
    gen.add_argument(
        "--type",
        choices=["tq2_0", "tq1_0"],
        default="tq2_0",
        help="ggml type of the ternary matrices (default tq2_0)",
    )
    gen.add_argument("--seed", type=int, default=0, help="weights seed (default 0)")
    gen.add_argument(
        "--untied",
        action="store_true",
        help="write a separate output.weight instead of tying it to the embedding",
    )
    gen.add_argument("--layers", type=int, default=None, help="override the number of layers")
    gen.add_argument("--force", action="store_true", help="overwrite an existing file")
    gen.set_defaults(func=_generate_model)
    return parser


# -- commands --------------------------------------------------------------------------------


def _setup_logging(args: argparse.Namespace) -> None:
    from .events import JsonLinesFormatter

    root = logging.getLogger("bitnet")
    for old in [h for h in root.handlers if getattr(h, "_bitnet_cli", False)]:
        root.removeHandler(old)  # main() may run more than once in a process (tests, notebooks)
    handler = logging.StreamHandler(sys.stderr)
    handler._bitnet_cli = True  # type: ignore[attr-defined]
    if args.log_format == "json":
        handler.setFormatter(JsonLinesFormatter())
        level = logging.DEBUG if args.verbose else logging.INFO
    else:
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        level = logging.DEBUG if args.verbose else logging.WARNING
    root.addHandler(handler)
    root.setLevel(level)
    # Native lines are chatty: only with --verbose.
    logging.getLogger("bitnet.native").setLevel(logging.DEBUG if args.verbose else logging.ERROR)


def _runtime(args: argparse.Namespace) -> Any:
    from .runtime import BitNetRuntime

    return BitNetRuntime(
        args.model,
        threads=args.threads,
        threads_batch=args.threads_batch,
        n_ctx=args.ctx_size,
        n_batch=args.batch_size,
        engine=args.engine,
        kernels=args.kernels,
        sha256=args.sha256,
    )


def _run(args: argparse.Namespace) -> int:
    _setup_logging(args)
    runtime = _runtime(args)
    if args.dry_run or args.diagnostics:
        run_args = {
            "prompt": args.prompt,
            "n_predict": args.n_predict,
            "temperature": args.temperature,
            "seed": args.seed,
        }
        return _report(
            runtime, run_args, dry_run=args.dry_run, diagnostics=args.diagnostics, as_json=args.json
        )
    if args.prompt is None and not args.conversation:
        raise ValueError("--prompt is required (or use --conversation, --dry-run, --diagnostics)")
    if args.prompt is not None:
        _check_text(args.prompt, "--prompt")
    sampling = dict(
        max_tokens=args.n_predict,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        min_p=args.min_p,
        repeat_penalty=args.repeat_penalty,
        stop=args.stop,
        seed=args.seed,
    )
    from .model import validate_sampling

    validate_sampling(**{k: v for k, v in sampling.items() if k != "seed"})
    model = runtime.load(seed=args.seed)
    try:
        if args.conversation:
            return _conversation(model, args.prompt, sampling)
        if args.json:
            result = runtime.generate(model, args.prompt, **sampling)
            print(json.dumps(_result_dict(result), ensure_ascii=False))
            return EXIT_OK
        return _stream_to_terminal(model, args.prompt, sampling)
    finally:
        model.close()


def _check_text(text: str, flag: str) -> None:
    """Arguments and stdin come as bytes; Python keeps the ones that are not UTF-8 as lone
    surrogates. Such text is refused (exit 2) rather than silently changed."""
    from ._native import _core

    _core.check_text(text, flag)


def _stream_to_terminal(model: Any, prompt: Any, sampling: dict[str, Any]) -> int:
    from .runtime import run_generation

    stream = model.stream(prompt, **sampling)

    def consume() -> Any:
        for piece in stream:
            sys.stdout.write(piece)
            sys.stdout.flush()
        return stream.result

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


def _conversation(model: Any, first: str | None, sampling: dict[str, Any]) -> int:
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
        stream = model.stream_chat(messages, **sampling)
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
    from .errors import ModelLoadError
    from .runtime import UnsupportedCPUError

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


def _diagnose(args: argparse.Namespace) -> int:
    from .runtime import diagnose

    _setup_logging(args)
    diag = diagnose(_runtime(args) if args.model else None)
    print(diag.to_json() if args.json else diag)
    return EXIT_OK if diag.ok else EXIT_PROBLEMS


def _bench(args: argparse.Namespace) -> int:
    from .bench import speed_table_row
    from .model import Model
    from .runtime import checked_int
    from .testing import generate_model

    for flag, value in (
        ("--n-prompt", args.n_prompt),
        ("--n-gen", args.n_gen),
        ("--repeats", args.repeats),
    ):
        checked_int(flag, value, 1, 1 << 20)
    for threads in args.threads:
        if not 1 <= threads <= 1024:
            raise ValueError(f"--threads must be from 1 to 1024, got {threads}")
    with tempfile.TemporaryDirectory() as tmp:
        path = args.model
        if path is None:
            path = generate_model(Path(tmp) / f"{args.shape}.gguf", shape=args.shape)
        rows = []
        for threads in args.threads:
            with Model(
                path,
                n_ctx=args.n_prompt + args.n_gen + 8,
                n_threads=threads,
                n_threads_batch=threads,
                engine=args.engine,
                kernels=args.kernels,
            ) as model:
                pp, tg = speed_table_row(model, args.n_prompt, args.n_gen, args.repeats)
                rows.append(
                    {
                        "threads": threads,
                        "engine": model.engine,
                        "kernels": model.kernels,
                        f"pp{args.n_prompt}": round(pp, 2),
                        f"tg{args.n_gen}": round(tg, 2),
                    }
                )
        if args.json:
            print(json.dumps({"model": str(path), "repeats": args.repeats, "rows": rows}))
        else:
            print(f"model {path}; median of {args.repeats}")
            print(
                f"{'threads':>7} {'engine':>7} {'kernels':<14} "
                f"{'pp' + str(args.n_prompt) + ' t/s':>12} {'tg' + str(args.n_gen) + ' t/s':>11}"
            )
            for row in rows:
                print(
                    f"{row['threads']:>7} {row['engine']:>7} {row['kernels']:<14} "
                    f"{row[f'pp{args.n_prompt}']:>12.2f} {row[f'tg{args.n_gen}']:>11.2f}"
                )
    return EXIT_OK


def _generate_model(args: argparse.Namespace) -> int:
    from .testing import generate_model

    if Path(args.path).exists() and not args.force:
        raise ValueError(f"'{args.path}' exists; pass --force to overwrite it")
    if args.layers is not None and not 1 <= args.layers <= 1024:
        raise ValueError(f"--layers must be from 1 to 1024, got {args.layers}")
    t0 = time.perf_counter()
    path = generate_model(
        args.path,
        shape=args.shape,
        activation=args.activation,
        ternary_type=args.type,
        seed=args.seed,
        tied=not args.untied,
        n_layer=args.layers,
    )
    size = path.stat().st_size
    print(
        f"wrote {path} ({size / 2**20:.1f} MiB, {args.shape}, {args.activation}, {args.type}) "
        f"in {time.perf_counter() - t0:.1f} s"
    )
    return EXIT_OK


def _setup(args: argparse.Namespace) -> int:
    from .bootstrap import run_from_args

    return run_from_args(args)


def _serve(args: argparse.Namespace) -> int:
    from .server import ServerConfig, serve

    keys = list(args.api_key)
    if args.api_key_file:
        keys += [
            line.strip()
            for line in Path(args.api_key_file).read_text().splitlines()
            if line.strip() and not line.startswith("#")
        ]
    config = ServerConfig(
        model=args.model,
        host=args.host,
        port=args.port,
        parallel=args.parallel,
        queue=args.queue,
        batch_size=args.batch_size,
        ctx_size=args.ctx_size,
        threads=args.threads,
        threads_batch=args.threads_batch,
        kernels=args.kernels,
        timeout=args.timeout,
        api_keys=keys,
        max_body_bytes=args.max_body_bytes,
        cors_origins=args.cors_origin,
        grace=args.grace,
        model_alias=args.alias,
    )
    from .runtime import BitNetRuntime
    from .server import listen_socket

    # Fail fast, before the model loads: a bad model or a busy port is known at once.
    BitNetRuntime(
        args.model,
        threads=args.threads,
        threads_batch=args.threads_batch,
        n_ctx=args.ctx_size,
        n_batch=args.batch_size,
        kernels=args.kernels,
        slots=args.parallel,
    ).validate()
    sock = listen_socket(config.host, config.port)
    return serve(config, log_format=args.log_format, sock=sock)


def _inspect(args: argparse.Namespace) -> int:
    from .convert import describe_tensor_type
    from .gguf_io import read_gguf

    g = read_gguf(args.path)
    tensors = [
        {
            "name": t.name,
            "type": describe_tensor_type(t.type),
            "shape": list(t.shape),
            "nbytes": t.nbytes,
        }
        for t in g.tensors
    ]
    if args.json:
        metadata = {
            k: (
                v.value
                if not isinstance(v.value, list) or len(v.value) <= 64
                else {"array_length": len(v.value), "first": v.value[:8]}
            )
            for k, v in g.kv.items()
        }
        print(
            json.dumps(
                {
                    "path": str(g.path),
                    "gguf_version": g.version,
                    "metadata": metadata,
                    "tensors": tensors,
                },
                indent=2,
                default=str,
            )
        )
        return EXIT_OK
    arch = g.value("general.architecture", "?")
    print(f"{g.path}: GGUF v{g.version}, architecture {arch}, {len(g.tensors)} tensors")
    for key, kv in g.kv.items():
        value = kv.value
        if isinstance(value, list):
            value = f"[{len(value)} items]"
        elif isinstance(value, str) and (len(value) > 80 or "\n" in value):
            value = repr(value[:77]) + "..."
        print(f"  {key} = {value}")
    types: dict[str, int] = {}
    for t in tensors:
        types[t["type"]] = types.get(t["type"], 0) + 1
    print(f"tensor types: {types}")
    print(f"  {'name':<32} {'type':<7} {'shape':<18} {'bytes':>12}")
    for t in tensors:
        shape = "x".join(map(str, t["shape"]))
        print(f"  {t['name']:<32} {t['type']:<7} {shape:<18} {t['nbytes']:>12}")
    return EXIT_OK


def _convert(args: argparse.Namespace) -> int:
    from .convert import convert

    if Path(args.dst).exists() and not args.force:
        raise ValueError(f"'{args.dst}' exists; pass --force to overwrite it")
    t0 = time.perf_counter()
    out = convert(
        args.src,
        args.dst,
        type=args.type,
        embedding_type=args.embedding_type,
        progress=sys.stderr.isatty(),
    )
    print(
        f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB, {args.type}, embedding "
        f"{args.embedding_type}) in {time.perf_counter() - t0:.1f} s"
    )
    return EXIT_OK


def _result_dict(result: Any) -> dict[str, Any]:
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
    }


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        return _dispatch(args)
    except KeyboardInterrupt:  # also while the extension and numpy are still importing
        print("\n[interrupted]", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return _stdout_closed()


def _dispatch(args: argparse.Namespace) -> int:
    from .errors import ModelLoadError
    from .runtime import UnsupportedCPUError

    try:
        return int(args.func(args))
    except (KeyboardInterrupt, BrokenPipeError):
        raise
    except ModelLoadError as exc:
        return _fail(args, exc, EXIT_MODEL)
    except UnsupportedCPUError as exc:
        return _fail(args, exc, EXIT_CPU)
    except (ValueError, TypeError, OSError) as exc:  # OSError includes ListenError: a busy port
        return _fail(args, exc, EXIT_USAGE)
    except Exception as exc:
        print(f"bitnet {args.command}: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_ERROR


def _fail(args: argparse.Namespace, exc: BaseException, code: int) -> int:
    print(f"bitnet {args.command}: error: {exc}", file=sys.stderr)
    return code


def _stdout_closed() -> int:
    """The reader of our output went away (``bitnet run ... | head``): stop quietly, as a
    program killed by SIGPIPE would, without a traceback or an error about flushing."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # no real stdout to redirect (an embedding, a test)
        pass
    return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())
