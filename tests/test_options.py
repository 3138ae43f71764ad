"""bitnet.options is the one definition of every setting: the command line, the HTTP server's
request schema, the Model's signature and the native call are derived from it, and stay so."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import bitnet
from bitnet import cli
from bitnet.cli.flags import add_arguments, from_arguments
from bitnet.options import (
    MAX_INT32,
    LoadOptions,
    SamplingOptions,
    cli_default,
    option,
    server_default,
)

PACKAGE = Path(bitnet.__file__).parent


def subparser(name: str) -> argparse.ArgumentParser:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def actions_by_dest(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.dest: a for a in parser._actions}


@pytest.mark.parametrize("command", ["run"])
def test_every_sampling_option_is_a_flag_with_its_default(command):
    actions = actions_by_dest(subparser(command))
    for f, opt in SamplingOptions.options():
        action = actions[f.name]
        assert action.option_strings, f.name
        if opt.kind not in ("texts", "bias"):  # repeatable flags start from None
            assert action.default == cli_default(f, opt), f.name
        assert opt.help.split(";")[0] in action.help, f.name


@pytest.mark.parametrize("command", ["run", "serve", "diagnose"])
def test_run_serve_and_diagnose_share_the_load_flags(command):
    actions = actions_by_dest(subparser(command))
    for f, opt in LoadOptions.options():
        if opt.flags == ():
            continue  # the model's default seed is run's --seed
        assert f.name in actions and actions[f.name].option_strings, (command, f.name)
    assert "sha256" in actions and "model" in actions


def test_the_request_schema_follows_the_options():
    from bitnet.server.schemas import CompletionRequest

    schema = CompletionRequest.model_json_schema()["properties"]
    for f, opt in SamplingOptions.options():
        assert f.name in CompletionRequest.model_fields, f.name
        field = CompletionRequest.model_fields[f.name]
        assert field.description == opt.help
        if opt.kind in ("int", "float"):
            text = str(schema[f.name])
            assert repr(opt.high).rstrip("0").rstrip(".") in text or str(int(opt.high)) in text
        if opt.kind not in ("texts", "bias"):  # collections: absent is None
            assert field.default == server_default(f, opt), f.name
    # OpenAI's defaults where they differ from the library's
    assert CompletionRequest.model_fields["temperature"].default == 1.0
    assert CompletionRequest.model_fields["max_tokens"].default is None


def test_model_methods_show_every_option():
    load = inspect.signature(bitnet.Model).parameters
    assert {f.name for f, _ in LoadOptions.options()} <= set(load)
    for method in ("generate", "stream", "chat", "stream_chat"):
        params = inspect.signature(getattr(bitnet.Model, method)).parameters
        for f, _ in SamplingOptions.options():
            assert params[f.name].default == f.default, (method, f.name)
            assert params[f.name].kind is inspect.Parameter.KEYWORD_ONLY
        assert "max_tokens (default 256" in getattr(bitnet.Model, method).__doc__


def test_checks_name_the_value_and_the_range():
    with pytest.raises(ValueError, match=r"top_p must be in \(0, 1\], got 0"):
        SamplingOptions(top_p=0)
    with pytest.raises(ValueError, match=rf"top_k must be an integer from 0 to {MAX_INT32}"):
        SamplingOptions(top_k=2**31)
    with pytest.raises(TypeError, match="temperature must be a number, not str"):
        SamplingOptions(temperature="1")
    with pytest.raises(ValueError, match=r"n_ctx \(--ctx-size\) must be an integer from 16"):
        LoadOptions.with_flags(n_ctx=8)
    with pytest.raises(TypeError, match=r"unknown SamplingOptions argument 'temprature'"):
        SamplingOptions.build(temprature=0.5)
    assert SamplingOptions(stop="x").stop == ("x",)
    assert SamplingOptions(seed=2**40).native(seed=2**40 + 5)["seed"] == 5


def test_options_object_and_keywords_combine(tiny_model):
    greedy = SamplingOptions(temperature=0, max_tokens=6)
    a = tiny_model.generate("Hello", greedy)
    b = tiny_model.generate("Hello", greedy, max_tokens=3)
    assert len(a.tokens) == 6 and b.tokens == a.tokens[:3]


def test_a_new_option_reaches_the_command_line_and_the_server_by_itself():
    """What 'adding a parameter touches options.py' means: a field added to the dataclass is a
    flag and a request field without another line written for it."""
    from pydantic import create_model

    from bitnet.server.schemas import _STRICT, _sampling_field

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Extended(SamplingOptions):
        typical_p: float = option(1.0, "float", "locally typical sampling", low=0.0, high=1.0)

    parser = argparse.ArgumentParser()
    add_arguments(parser, Extended)
    args = parser.parse_args(["--typical-p", "0.5", "--temp", "0"])
    built = from_arguments(Extended, args)
    assert built.typical_p == 0.5 and built.temperature == 0.0
    fields = {f.name: _sampling_field(f, o) for f, o in Extended.options()}
    Request = create_model("Request", __config__=_STRICT, **fields)
    assert Request(typical_p=0.25).typical_p == 0.25
    with pytest.raises(ValueError):
        Request(typical_p=2.0)


def test_version_flag():
    proc = subprocess.run(
        [sys.executable, "-m", "bitnet", "--version"], capture_output=True, text=True, check=True
    )
    assert proc.stdout.startswith(f"bitnet {bitnet.__version__} (bitnet-cpu;")


def test_the_server_extra_is_named_when_missing():
    code = (
        "import sys; sys.modules['fastapi'] = None\n"
        "try:\n    import bitnet.server\n"
        "except ImportError as exc:\n    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
    assert "fastapi" in out and 'pip install "bitnet-cpu[server]"' in out
    # the library itself does not need it
    code = "import sys; sys.modules['fastapi'] = None; import bitnet.runtime, bitnet.cli; print(1)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.stdout == "1\n", proc.stderr


def test_old_module_paths_are_the_new_modules():
    import importlib

    from bitnet._aliases import MOVED

    for old, new in MOVED.items():
        module = importlib.import_module(old)
        assert module is importlib.import_module(new), old
        assert module.__spec__.name == new  # its own relative imports keep working
    from bitnet.gguf_io import read_gguf
    from bitnet.supervisor import RuntimeSupervisor

    assert read_gguf is importlib.import_module("bitnet.formats.gguf").read_gguf
    assert RuntimeSupervisor is bitnet.runtime.RuntimeSupervisor


# -- the floors of the package: imports point down, never up, and never in a circle --------

FLOORS = {
    "errors": 0,
    "options": 0,
    "events": 0,
    "version": 0,
    "_native": 0,
    "_aliases": 0,
    "grammar": 0,
    "cpu": 1,
    "accelerators": 1,
    "telemetry": 1,
    "chat": 1,
    "tools": 1,
    "formats": 1,
    "model": 2,
    "kernels": 2,
    "runtime": 3,
    "server": 4,
    "deploy": 4,
    "snapshot": 4,
    "cli": 5,
    "testing": 5,
    "dashboard": 5,
}


def _imports(path: Path) -> list[str]:
    """bitnet modules that `path` imports, anywhere in it except under `if TYPE_CHECKING:`."""
    module = ".".join(("bitnet", *path.relative_to(PACKAGE).with_suffix("").parts))
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    if path.name == "__init__.py":
        module = package.removesuffix(".__init__")
        package = module
    tree = ast.parse(path.read_text())
    skipped = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.dump(node.test)
        for n in ast.walk(node)
    }
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [f"{target}.{a.name}" for a in node.names] if not node.module else [target]
            found += [n for n in names if n.startswith("bitnet.")]
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("bitnet.")]
    return found


def test_imports_point_down_the_floors():
    problems = []
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).parts
        if parts == ("__init__.py",) or parts == ("__main__.py",):
            continue  # the facade: it may name anything (lazily)
        floor = FLOORS[parts[0].removesuffix(".py")]
        for target in _imports(path):
            top = target.split(".")[1]
            if top not in FLOORS:
                continue  # bitnet._core: the extension
            if FLOORS[top] > floor:
                problems.append(f"{path.relative_to(PACKAGE)} imports {target} (floor up)")
    assert not problems, "\n".join(problems)


def test_no_import_circles_between_modules():
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).with_suffix("")
        name = ".".join(("bitnet", *rel.parts)).removesuffix(".__init__")
        graph[name] = set(_imports(path))
    modules = set(graph)

    def resolve(target: str) -> str | None:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        return target or None

    edges = {
        m: {r for t in targets if (r := resolve(t)) and r != m and not m.startswith(r + ".")}
        for m, targets in graph.items()
        if m != "bitnet"
    }
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in edges.get(node, ()):
            if nxt == "bitnet" or nxt not in edges:
                continue
            if state.get(nxt) == 1:
                raise AssertionError(" -> ".join([*trail, node, nxt]))
            if nxt not in state:
                visit(nxt, [*trail, node])
        state[node] = 2

    for node in edges:
        if node not in state:
            visit(node, [])
