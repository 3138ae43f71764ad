"""Deployment assets, checked offline: Dockerfiles (hadolint + properties), the Terraform module
(parsed with python-hcl2), the CI workflow (GitHub's schema via check-jsonschema, zizmor), the
wheel configuration and the model fetcher the init container runs."""

from __future__ import annotations

import hashlib
import http.server
import json
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import hcl2
import pytest
import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from bitnet.deploy.fetch import FetchError, fetch

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "infra" / "docker"
TF = ROOT / "infra" / "terraform"
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"


def tool(name: str) -> str:
    path = shutil.which(name) or str(Path(sys.executable).parent / name)
    if not Path(path).exists():
        pytest.fail(f"{name} is missing: install the test extra (pip install '.[test]')")
    return path


# -- containers --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["bitnet-runtime.Dockerfile", "bitnet-edge.Dockerfile"])
def test_dockerfile_lints_clean(name):
    proc = subprocess.run(
        [tool("hadolint"), "--config", str(DOCKER / ".hadolint.yaml"), str(DOCKER / name)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("name", ["bitnet-runtime.Dockerfile", "bitnet-edge.Dockerfile"])
def test_dockerfile_properties(name):
    text = (DOCKER / name).read_text()
    froms = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\w+))?", text, re.M)
    assert len(froms) >= 2, "multi-stage"
    assert "ARG PYTHON_IMAGE=python:3.11.9-slim-bookworm" in text
    assert re.search(r"python:3\.11\.9-slim-bookworm@sha256:[0-9a-f]{64}", text), "digest comment"
    for label in ("source", "version", "revision", "licenses"):
        assert f"org.opencontainers.image.{label}=" in text
    user = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert user and user[-1] not in ("root", "0")
    assert 'ENTRYPOINT ["python", "/opt/bitnet/run_inference.py"]' in text
    assert "run_inference_server.py" in text and "--host 0.0.0.0" in text
    assert re.search(r"^HEALTHCHECK .*\n.*/health", text, re.M)
    assert "llama-cpp-python==0.3.36" in text


def test_runtime_image_builds_the_wheel_with_build():
    text = (DOCKER / "bitnet-runtime.Dockerfile").read_text()
    assert "python -m build --wheel" in text
    runtime_stage = text.split("AS runtime", 1)[1]
    assert "build-essential" not in runtime_stage  # no compilers in the slim layer


def test_edge_image_keeps_a_venv_and_portable_flags():
    text = (DOCKER / "bitnet-edge.Dockerfile").read_text()
    runtime_stage = text.split("AS runtime", 1)[1]
    assert "COPY --from=build --chown=bitnet:bitnet /opt/venv /opt/venv" in runtime_stage
    assert "ENV PATH=/opt/venv/bin" in runtime_stage
    assert "-DGGML_NATIVE=OFF" in text and "linux/arm64" in text


# -- terraform ---------------------------------------------------------------------------------


def _clean(value):
    """python-hcl2's output without its markers: quoted labels and strings unquoted."""
    if isinstance(value, dict):
        return {
            _clean(k): _clean(v)
            for k, v in value.items()
            if not (k.startswith("__") and k.endswith("__"))
        }
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def load_tf() -> dict[str, list]:
    merged: dict[str, list] = {}
    for path in sorted(TF.glob("*.tf")):
        with path.open() as f:
            for key, value in _clean(hcl2.load(f)).items():
                merged.setdefault(key, []).extend(value)
    return merged


def resources(tf: dict[str, list]) -> dict[str, dict]:
    out = {}
    for block in tf["resource"]:
        for kind, named in block.items():
            for name, body in named.items():
                out[f"{kind}.{name}"] = body
    return out


def test_terraform_resources_and_variables():
    tf = load_tf()
    res = resources(tf)
    for kind in (
        "kubernetes_namespace_v1",
        "kubernetes_secret_v1",
        "kubernetes_config_map_v1",
        "kubernetes_deployment_v1",
        "kubernetes_service_v1",
        "kubernetes_horizontal_pod_autoscaler_v2",
    ):
        assert any(key.startswith(kind + ".") for key in res), kind
    variables = {name for block in tf["variable"] for name in block}
    assert {"image", "replicas", "resource_requests", "resource_limits", "model_url"} <= variables
    assert {"enable_hpa", "model_sha256", "server_args", "drain_seconds"} <= variables
    hpa = res["kubernetes_horizontal_pod_autoscaler_v2.bitnet"]
    assert "var.enable_hpa" in str(hpa["count"])
    service = res["kubernetes_service_v1.bitnet"]
    assert service["spec"][0]["port"][0]["port"] == 80


def test_terraform_deployment_probes_command_and_drain():
    res = resources(load_tf())
    spec = res["kubernetes_deployment_v1.bitnet"]["spec"][0]
    assert "var.replicas" in str(spec["replicas"])
    pod = spec["template"][0]["spec"][0]
    container = pod["container"][0]
    assert "var.image" in str(container["image"])
    command = " ".join(container["command"] + container["args"])
    assert "run_inference_server.py --host 0.0.0.0" in command and "--model" in command
    assert "$MODEL_PATH" in command and "$BITNET_SERVER_ARGS" in command
    paths = {
        probe: container[probe][0]["http_get"][0]["path"]
        for probe in ("liveness_probe", "readiness_probe", "startup_probe")
    }
    assert paths == {
        "liveness_probe": "/health",
        "readiness_probe": "/ready",
        "startup_probe": "/health",
    }
    assert container["lifecycle"][0]["pre_stop"][0]["exec"][0]["command"]
    assert "grace_period" in str(pod["termination_grace_period_seconds"])
    assert "var.resource_requests" in str(container["resources"][0]["requests"])
    assert "var.resource_limits" in str(container["resources"][0]["limits"])
    init = next(d["init_container"] for d in pod["dynamic"] if "init_container" in d)
    assert "model_is_remote" in str(init["for_each"])
    init_body = init["content"][0]
    assert init_body["command"] == ["python", "-m", "bitnet.deploy.fetch"]
    assert "$(MODEL_SHA256)" in init_body["args"]
    locals_ = {k: v for block in load_tf()["locals"] for k, v in block.items()}
    # the drain: grace period = preStop pause + the server's --grace + a margin
    assert "var.pre_stop_seconds + var.drain_seconds" in str(locals_["grace_period"])
    assert "--grace" in str(locals_["server_args"])


def test_terraform_gpu_node_pool_wiring():
    """The optional GPU pool reaches the pod: node selector, tolerations, the GPU resource in
    requests and limits, and --n-gpu-layers in the server's flags."""
    tf = load_tf()
    variables = {name: body for block in tf["variable"] for name, body in block.items()}
    assert "gpu" in variables and len(variables["gpu"]["validation"]) == 4
    pod = resources(tf)["kubernetes_deployment_v1.bitnet"]["spec"][0]["template"][0]["spec"][0]
    assert "var.gpu.enabled" in str(pod["node_selector"])
    toleration = next(d["toleration"] for d in pod["dynamic"] if "toleration" in d)
    assert "var.gpu.tolerations" in str(toleration["for_each"])
    container_resources = pod["container"][0]["resources"][0]
    assert "local.gpu_resources" in str(container_resources["limits"])
    assert "local.gpu_resources" in str(container_resources["requests"])
    locals_ = {k: v for block in tf["locals"] for k, v in block.items()}
    assert "local.gpu_args" in str(locals_["server_args"])


def _console(tmp_path: Path, expression: str, *variables: str) -> subprocess.CompletedProcess:
    """`terraform console` on the module's variables and locals (no provider: offline)."""
    work = tmp_path / "tf"
    if not work.exists():
        work.mkdir()
        for name in ("variables.tf", "locals.tf"):
            shutil.copy(TF / name, work / name)
        init = subprocess.run(
            ["terraform", "init", "-backend=false", "-input=false"],
            cwd=work,
            capture_output=True,
            text=True,
        )
        assert init.returncode == 0, init.stdout + init.stderr
    args = ["-var", "image=example/bitnet:1", "-var", "model_url=/models/m.gguf"]
    for v in variables:
        args += ["-var", v]
    return subprocess.run(
        ["terraform", "console", *args],
        cwd=work,
        input=expression + "\n",
        capture_output=True,
        text=True,
    )


def test_terraform_gpu_settings_evaluate_and_validate(tmp_path: Path):
    if shutil.which("terraform") is None:
        pytest.skip("needs the terraform binary (CI's terraform job validates the whole module)")
    expr = "jsonencode([local.server_args, local.gpu_resources])"
    off = _console(tmp_path, expr)
    assert off.returncode == 0, off.stderr
    assert json.loads(json.loads(off.stdout)) == [
        "--threads auto --ctx-size 4096 --parallel 1 --grace 30",
        {},
    ]
    on = _console(
        tmp_path, expr, 'gpu={enabled=true, count=2, resource="amd.com/gpu", n_gpu_layers=20}'
    )
    assert on.returncode == 0, on.stderr
    args, gpus = json.loads(json.loads(on.stdout))
    assert "--n-gpu-layers 20 --grace 30" in args and gpus == {"amd.com/gpu": "2"}
    for bad, message in (
        ("gpu={enabled=true, count=0}", "gpu.count must be a whole number"),
        ("gpu={enabled=true, count=1.5}", "gpu.count must be a whole number"),
        ('gpu={enabled=true, resource="GPU"}', "gpu.resource must be an extended resource"),
        (
            'gpu={enabled=true, tolerations=[{key="k", operator="Exists", value="v"}]}',
            "gpu.tolerations: operator Equal",
        ),
        (
            'gpu={enabled=true, tolerations=[{key="k", effect="Sometimes", value="v"}]}',
            "gpu.tolerations: operator Equal",
        ),
        ("gpu={enabled=true, n_gpu_layers=-1}", "gpu.n_gpu_layers must be"),
    ):
        proc = _console(tmp_path, expr, bad)
        assert proc.returncode != 0, bad
        assert message in " ".join((proc.stdout + proc.stderr).split()), (bad, proc.stderr)


def test_terraform_folder_documents_usage():
    text = (TF / "README.md").read_text()
    assert "terraform init -backend=false" in text
    assert 'terraform apply -var="model_url=' in text


def test_server_has_the_probe_endpoints_and_grace_flag():
    """What the module relies on exists in the server and its CLI."""
    from bitnet.cli import build_parser

    server = (ROOT / "python" / "bitnet" / "server" / "app.py").read_text()
    assert '"/health"' in server and '"/ready"' in server
    help_text = build_parser()._subparsers._group_actions[0].choices["serve"].format_help()
    for flag in ("--grace", "--host", "--threads", "--ctx-size", "--parallel"):
        assert flag in help_text


# -- CI workflow -------------------------------------------------------------------------------


def test_workflow_matches_githubs_schema():
    proc = subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(WORKFLOW)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_workflow_has_no_high_severity_zizmor_findings():
    proc = subprocess.run(
        [tool("zizmor"), "--offline", "--min-severity", "high", "--format", "plain", str(WORKFLOW)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_workflow_jobs_form_the_staircase():
    wf = yaml.safe_load(WORKFLOW.read_text())
    jobs = wf["jobs"]
    assert set(jobs) == {
        "lint",
        "python-tests",
        "build-native",
        "python-wheel",
        "container-images",
        "docs-sync",
        "terraform",
    }
    assert jobs["python-tests"]["needs"] == "lint"
    assert jobs["build-native"]["needs"] == "python-tests"
    assert jobs["python-wheel"]["needs"] == "build-native"
    assert jobs["container-images"]["needs"] == "python-wheel"
    assert wf["permissions"] == {"contents": "read"}
    text = WORKFLOW.read_text()
    for use in re.findall(r"uses:\s*(\S+)", text):
        assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", use), f"unpinned action {use}"
    assert "python tools/check_docs_sync.py" in text
    assert "terraform fmt -check" in text and "terraform validate" in text


def test_wheel_configuration():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" in project["project"]["dynamic"]
    skb = project["tool"]["scikit-build"]
    assert skb["metadata"]["version"]["provider"] == "scikit_build_core.metadata.setuptools_scm"
    cibw = project["tool"]["cibuildwheel"]
    assert "pytest" in cibw["test-command"] and cibw["test-extras"] == ["test"]
    repair = project["tool"]["cibuildwheel"]["linux"]["repair-wheel-command"]
    for lib in ("libllama.so", "libggml.so", "libggml-base.so", "libggml-cpu.so"):
        assert f"--exclude {lib}" in repair  # the pinned llama-cpp-python provides them


def test_changelog_has_dated_sections():
    text = (ROOT / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in text
    assert re.search(r"^## \[\d+\.\d+\.\d+\] - \d{4}-\d{2}-\d{2}$", text, re.M)


# -- the fetcher the init container runs --------------------------------------------------------


class _Files(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep pytest output clean
        pass


@pytest.fixture
def http_root(tmp_path: Path):
    root = tmp_path / "www"
    root.mkdir()
    handler = lambda *a, **kw: _Files(*a, directory=str(root), **kw)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_fetch_downloads_checks_and_skips(http_root, tmp_path: Path):
    root, url = http_root
    payload = bytes(range(256)) * 4096
    (root / "m.gguf").write_bytes(payload)
    good = hashlib.sha256(payload).hexdigest()
    dest = tmp_path / "models" / "m.gguf"
    assert fetch(f"{url}/m.gguf", dest, sha256=good).read_bytes() == payload
    mtime = dest.stat().st_mtime_ns
    fetch(f"{url}/m.gguf", dest, sha256=good)  # present and right: untouched
    assert dest.stat().st_mtime_ns == mtime
    with pytest.raises(FetchError, match="expected"):
        fetch(f"{url}/m.gguf", tmp_path / "other.gguf", sha256="0" * 64)
    assert not (tmp_path / "other.gguf").exists() and not (tmp_path / "other.gguf.part").exists()
    with pytest.raises(FetchError, match="HTTP 404"):
        fetch(f"{url}/missing.gguf", tmp_path / "x.gguf")
    with pytest.raises(FetchError, match="64 hex digits"):
        fetch(f"{url}/m.gguf", tmp_path / "y.gguf", sha256="abc")


def test_fetch_local_path_and_cli(tmp_path: Path):
    src = tmp_path / "src.gguf"
    src.write_bytes(b"GGUF-bytes")
    dest = tmp_path / "out" / "m.gguf"
    proc = subprocess.run(
        [sys.executable, "-m", "bitnet.deploy.fetch", str(src), str(dest), "--sha256", ""],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert dest.read_bytes() == b"GGUF-bytes"
    proc = subprocess.run(
        [sys.executable, "-m", "bitnet.deploy.fetch", str(tmp_path / "nope"), str(dest) + "2"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1 and "not a file or an http(s) URL" in proc.stderr
