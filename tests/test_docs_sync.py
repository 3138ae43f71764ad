"""tools/check_docs_sync.py passes on this repository and fails on each kind of drift."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "check_docs_sync.py"
COPY = [
    "docs",
    "README.md",
    "CHANGELOG.md",
    "pyproject.toml",
    "setup_env.py",
    "python/bitnet",
    "infra",
    ".github",
    "benchmarks",
    "csrc",
    "tools",
]


def check(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(TOOL), "--root", str(root)], capture_output=True, text=True
    )


def git(root: Path, *args: str, date: str = "2026-11-27T12:00:00") -> None:
    env = {
        **os.environ,
        "GIT_AUTHOR_DATE": date,
        "GIT_COMMITTER_DATE": date,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.org",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.org",
    }
    subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True, env=env)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git copy of the files the checker reads, committed on the docs' review date."""
    root = tmp_path / "repo"
    for rel in COPY:
        src = ROOT / rel
        if src.is_dir():
            shutil.copytree(
                src, root / rel, ignore=shutil.ignore_patterns("__pycache__", ".models")
            )
        else:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, root / rel)
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "copy")
    git(root, "tag", "v0.1.0")
    return root


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def test_this_repository_passes():
    proc = check(ROOT)
    assert proc.returncode == 0, proc.stderr


def test_the_copy_passes(repo: Path):
    proc = check(repo)
    assert proc.returncode == 0, proc.stderr


def test_code_changed_after_review_fails(repo: Path):
    edit(repo / "python/bitnet/server/app.py", '"""', '"""Changed later. ')
    git(repo, "commit", "-qam", "later change", date="2027-01-05T10:00:00")
    proc = check(repo)
    assert proc.returncode == 1
    assert re.search(r"docs/server.md: last reviewed \d{4}-\d{2}-\d{2} but", proc.stderr)
    assert "changed on 2027-01-05" in proc.stderr


def test_outside_git_the_dates_are_not_guessed(repo: Path):
    """A copied tree (an sdist, cibuildwheel's container) has no history; mtimes say "copied"."""
    shutil.rmtree(repo / ".git")
    proc = check(repo)
    assert proc.returncode == 0, proc.stderr
    assert "review dates not checked" in proc.stderr


def test_doc_without_review_line_fails(repo: Path):
    edit(repo / "docs/formats.md", "Last reviewed: ", "Reviewed: ")
    assert "docs/formats.md: no 'Last reviewed" in check(repo).stderr


def test_component_without_srd_entry_fails(repo: Path):
    (repo / "python/bitnet/newthing.py").write_text('"""A new module."""\n')
    proc = check(repo)
    assert proc.returncode == 1
    assert "module bitnet.newthing exists in the code but has no SRD entry" in proc.stderr


def test_srd_entry_for_removed_component_fails(repo: Path):
    app = repo / "python/bitnet/server/app.py"
    edit(app, '@router.post("/detokenize"', '@router.post("/untokenize"')
    proc = check(repo)
    assert "endpoint POST /detokenize is documented but no longer exists" in proc.stderr
    assert "endpoint POST /untokenize exists in the code but has no SRD entry" in proc.stderr


def test_srd_entry_whose_doc_lacks_a_section_fails(repo: Path):
    edit(repo / "docs/SRD.md", "| docs/formats.md |", "| docs/server.md |")
    assert "docs/server.md has no section naming" in check(repo).stderr


def test_terraform_resource_removed_fails(repo: Path):
    main_tf = repo / "infra/terraform/main.tf"
    edit(
        main_tf,
        'resource "kubernetes_service_v1" "bitnet"',
        'resource "kubernetes_service_v1" "web"',
    )
    proc = check(repo)
    assert (
        "terraform kubernetes_service_v1.bitnet is documented but no longer exists" in proc.stderr
    )


def test_unknown_flag_or_command_in_docs_fails(repo: Path):
    readme = repo / "docs/server.md"
    readme.write_text(readme.read_text() + "\n```bash\nbitnet serve --model m.gguf --turbo\n```\n")
    proc = check(repo)
    assert "serve has no --turbo flag" in proc.stderr
    readme.write_text(readme.read_text() + "\nRun `bitnet launch --model m.gguf`.\n")
    assert "`bitnet launch` is not a command" in check(repo).stderr


def test_script_flags_are_checked_against_their_command(repo: Path):
    doc = repo / "docs/deployment.md"
    doc.write_text(doc.read_text() + "\n    python setup_env.py --model-dir /m --offline\n")
    assert "setup has no --offline flag" in check(repo).stderr


def test_unknown_endpoint_in_docs_fails(repo: Path):
    doc = repo / "docs/server.md"
    doc.write_text(doc.read_text() + "\nAlso `POST /v1/embeddings`.\n")
    proc = check(repo)
    assert "`POST /v1/embeddings` is not an endpoint" in proc.stderr


def test_unknown_telemetry_event_or_metric_fails(repo: Path):
    doc = repo / "docs/deployment.md"
    edit(doc, "| `dry_run` |", "| `dry_run_started` |")
    doc.write_text(doc.read_text() + "\nWatch the metric `bitnet_cache_hits_total`.\n")
    proc = check(repo)
    assert "telemetry event `dry_run_started` is not emitted" in proc.stderr
    assert "metric `bitnet_cache_hits_total` is not exported" in proc.stderr


def test_missing_version_entries_fail(repo: Path):
    git(repo, "tag", "v0.2.0")
    proc = check(repo)
    for rel in ("docs/roadmap.md", "docs/iteration-log.md", "CHANGELOG.md"):
        assert f"{rel}: no entry (heading) for the current version 0.2.0" in proc.stderr


def test_incomplete_checklist_fails(repo: Path):
    checklist = repo / "docs/documentation-review-checklist.md"
    edit(checklist, "- [x] server.md", "- [ ] server.md")
    assert "unticked item: server.md" in check(repo).stderr
    edit(checklist, "- [ ] server.md", "- [x] srv.md")
    assert "does not list docs/server.md" in check(repo).stderr


def test_an_exit_code_a_command_does_not_use_fails(repo: Path):
    doc = repo / "docs/runtime_supervisor.md"
    edit(doc, "the diagnostics below (exit 5 when", "the diagnostics below (exit 4 when")
    proc = check(repo)
    assert "says `bitnet diagnose` exits 4, but it exits with one of 0, 1, 2, 5, 130" in (
        proc.stderr
    )
    doc.write_text(doc.read_text() + "\nA crash exits 139.\n")
    assert "exit code 139 is not one the CLI uses" in check(repo).stderr


def test_exit_codes_follow_the_command_named_before_them(repo: Path):
    doc = repo / "docs/server.md"
    doc.write_text(doc.read_text() + "\n`bitnet serve` exits 141 when its output closes.\n")
    assert "says `bitnet serve` exits 141" in check(repo).stderr
    doc.write_text(doc.read_text() + "\n`bitnet run -p x | head` exits 141.\n")
    assert check(repo).stderr.count("exits 141") == 1  # run may end with 141
