#!/usr/bin/env python3
"""Fail when the docs drift from the code.

    python tools/check_docs_sync.py [--root DIR]

Checks (each failure is printed with the file and the fix; exit 1 if any):

1. review dates: every docs/*.md has a line ``Last reviewed: YYYY-MM-DD (covers PATH ...)``, and
   that date is not older than the newest change (git commit, or uncommitted edit) to the paths
   it covers (outside a git checkout only the lines are checked: there is no history);
2. the SRD (docs/SRD.md) component table, ``| kind | name | requirement | doc |`` with kinds
   module, cli, endpoint and terraform: every listed component exists in the code and is named in
   its doc, and every module, CLI command, HTTP endpoint and Terraform resource of the code is
   listed;
3. every ``bitnet <command> --flag`` (and run_inference.py, run_inference_server.py,
   setup_env.py) in the docs' code names a real command and flag, every ``GET``/``POST``
   endpoint or ``/v1/...`` path they mention is served, and every telemetry event
   (a backticked name in a runbook table whose first column is ``event``) and backticked
   ``bitnet_*`` name in a paragraph about metrics is one the code emits;
4. docs/roadmap.md, docs/iteration-log.md and CHANGELOG.md have an entry for the current version
   (the newest ``vX.Y.Z`` git tag, else pyproject's setuptools-scm fallback_version);
5. docs/documentation-review-checklist.md has every item ticked and names every doc;
6. every exit code the docs give (``exit 4``, ``exits 0``, ``exit code 5``) is one the code
   uses: for the command named last before it in the same paragraph (``bitnet diagnose``), one
   that command can end with (``COMMAND_EXIT_CODES`` in bitnet/cli/exits.py), else one of
   ``EXIT_CODES``.

No build is needed: the code is read with regular expressions, and the command line (whose
flags come from bitnet/options.py) is built by a child interpreter from the source tree alone.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = None  # type: ignore[assignment]

REVIEWED = re.compile(r"^Last reviewed: (\d{4}-\d{2}-\d{2}) \(covers ([^)]+)\)\s*$", re.M)
SCRIPTS = {"run_inference.py": "run", "run_inference_server.py": "serve", "setup_env.py": "setup"}
KINDS = ("module", "cli", "endpoint", "terraform")
# Packages documented as one unit: their modules need no SRD entry of their own.
WHOLE_PACKAGES = ("cli", "server", "testing", "dashboard")
# Run in a child interpreter (see Checker.cli): the parser's commands, flags and exit codes.
_READ_CLI = """
import json, sys
sys.path.insert(0, sys.argv[1])
from bitnet.cli import COMMAND_EXIT_CODES, EXIT_CODES, build_parser
parser = build_parser()
sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
commands = {
    name: sorted({o for a in p._actions for o in a.option_strings if o.startswith("--")})
    for name, p in sub.choices.items()
}
print(json.dumps({
    "commands": commands,
    "exit_codes": sorted(EXIT_CODES),
    "command_exit_codes": {k: sorted(v) for k, v in COMMAND_EXIT_CODES.items()},
}))
"""
INVOCATION = re.compile(
    r"(?:^|[\s`(])((?:python -m )?bitnet|run_inference_server\.py|run_inference\.py|setup_env\.py)"
    r"\s+(.*)"
)


class Checker:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.errors: list[str] = []
        self.docs = sorted((root / "docs").glob("*.md"))
        self._cli: dict[str, Any] | None = None

    def error(self, where: Path | str, message: str) -> None:
        rel = where.relative_to(self.root) if isinstance(where, Path) else where
        self.errors.append(f"{rel}: {message}")

    # -- git ---------------------------------------------------------------------------------

    def _git(self, *args: str) -> str | None:
        try:
            proc = subprocess.run(
                ["git", "-C", str(self.root), *args], capture_output=True, text=True, check=False
            )
        except OSError:
            return None
        return proc.stdout.strip() if proc.returncode == 0 else None

    def last_change(self, paths: list[str]) -> dt.date | None:
        """Newest change to ``paths``: an uncommitted edit counts as today."""
        if self._git("rev-parse", "--is-inside-work-tree") != "true":
            return None  # no history (an sdist, a copied tree): file times would only say "copied"
        if self._git("status", "--porcelain", "--", *paths):
            return dt.datetime.now(dt.timezone.utc).date()
        stamp = self._git("log", "-1", "--format=%cs", "--", *paths)
        return dt.date.fromisoformat(stamp) if stamp else None

    # -- what the code has ---------------------------------------------------------------------

    def cli(self) -> dict[str, Any]:
        """The command line as the code builds it: {"commands": {command: [flags]},
        "exit_codes": [...], "command_exit_codes": {command: [...]}}.

        The flags of the settings are derived from bitnet/options.py at run time, so the parser
        is built, in a child interpreter that imports the package from this root (``-S``: the
        command line needs nothing beyond the standard library, and an installed bitnet must
        not stand in for the tree being checked)."""
        if self._cli is None:
            proc = subprocess.run(
                [sys.executable, "-S", "-c", _READ_CLI, str(self.root / "python")],
                capture_output=True,
                text=True,
                check=False,
            )
            if proc.returncode != 0:
                self.error("python/bitnet/cli", f"cannot build the parser: {proc.stderr.strip()}")
                self._cli = {"commands": {}, "exit_codes": [], "command_exit_codes": {}}
            else:
                self._cli = json.loads(proc.stdout)
        return self._cli

    def cli_commands(self) -> dict[str, set[str]]:
        """{command: flags} (``--help`` included)."""
        return {name: set(flags) for name, flags in self.cli()["commands"].items()}

    def endpoints(self) -> set[str]:
        found = set()
        for path in (self.root / "python/bitnet/server").glob("*.py"):
            found |= {
                f"{method.upper()} {route}"
                for method, route in re.findall(
                    r'@(?:app|\w*router)\.(get|post|put|delete)\(\s*"([^"]+)"', path.read_text()
                )
            }
        return found

    def modules(self) -> set[str]:
        """Public modules and packages, and the modules of packages that are not documented
        as one unit (the CLI's commands are "cli" entries; the testing helpers one entry)."""
        pkg = self.root / "python/bitnet"
        names = set()
        for path in pkg.rglob("*.py"):
            parts = path.relative_to(pkg).with_suffix("").parts
            if any(p.startswith("_") and p != "__init__" for p in parts):
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
                if not parts:
                    continue
            elif len(parts) > 1 and parts[0] in WHOLE_PACKAGES:
                continue
            names.add(".".join(("bitnet", *parts)))
        return names

    def terraform_resources(self) -> set[str]:
        found = set()
        for tf in (self.root / "infra/terraform").glob("*.tf"):
            found |= {
                f"{a}.{b}"
                for a, b in re.findall(r'^resource "(\w+)" "(\w+)"', tf.read_text(), re.M)
            }
        return found

    def telemetry(self) -> tuple[set[str], set[str]]:
        """(event names, metric names) the code emits."""
        events: set[str] = {"log"}
        metrics: set[str] = set()
        for path in (self.root / "python/bitnet").rglob("*.py"):
            text = path.read_text()
            events |= set(re.findall(r'emit\(\s*"([a-z_]+)"', text))
            events |= set(re.findall(r'"event":\s*"([a-z_]+)"', text))
            for name in re.findall(
                r'(?:Counter|Gauge|Histogram|Summary)\(\s*"(bitnet_[a-z_]+)"', text
            ):
                metrics.add(name)
                if "Counter(" in text.split(name)[0][-40:]:
                    metrics.add(name + "_total")
        return events, metrics

    def current_version(self) -> str | None:
        tags = self._git("tag", "--list", "v[0-9]*", "--merged", "HEAD", "--sort=-v:refname")
        if tags:
            return tags.splitlines()[0].removeprefix("v")
        pyproject = self.root / "pyproject.toml"
        if tomllib is not None and pyproject.exists():
            data = tomllib.loads(pyproject.read_text())
            return data.get("tool", {}).get("setuptools_scm", {}).get("fallback_version")
        match = (
            re.search(r'fallback_version\s*=\s*"([^"]+)"', pyproject.read_text())
            if pyproject.exists()
            else None
        )
        return match.group(1) if match else None

    # -- checks ------------------------------------------------------------------------------

    def check_review_dates(self) -> None:
        if self._git("rev-parse", "--is-inside-work-tree") != "true":
            print("docs-sync: not a git checkout: review dates not checked", file=sys.stderr)
        for doc in self.docs:
            match = REVIEWED.search(doc.read_text())
            if match is None:
                self.error(doc, "no 'Last reviewed: YYYY-MM-DD (covers PATH ...)' line; add one")
                continue
            reviewed = dt.date.fromisoformat(match.group(1))
            paths = match.group(2).replace(",", " ").split()
            missing = [p for p in paths if not (self.root / p).exists()]
            if missing:
                self.error(doc, f"covers {', '.join(missing)}, which does not exist")
                continue
            changed = self.last_change(paths)
            if changed is not None and changed > reviewed:
                self.error(
                    doc,
                    f"last reviewed {reviewed} but {', '.join(paths)} changed on {changed}: "
                    "review the doc against the code and update its date",
                )

    def check_srd(self, commands: dict[str, set[str]], endpoints: set[str]) -> None:
        srd = self.root / "docs/SRD.md"
        if not srd.exists():
            self.error("docs/SRD.md", "missing")
            return
        listed: dict[str, set[str]] = {kind: set() for kind in KINDS}
        for line in srd.read_text().splitlines():
            cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
            if len(cells) < 4 or cells[0] not in KINDS:
                continue
            kind, name, _requirement, doc = cells[0], cells[1], cells[2], cells[3]
            listed[kind].add(name)
            doc_path = self.root / doc.split("#")[0]
            if not doc_path.is_file():
                self.error(srd, f"{kind} {name}: its doc {doc} does not exist")
            elif _doc_name(kind, name) not in doc_path.read_text():
                self.error(
                    srd, f"{kind} {name}: {doc} has no section naming {_doc_name(kind, name)!r}"
                )
        actual = {
            "module": self.modules(),
            "cli": {f"bitnet {c}" for c in commands},
            "endpoint": endpoints,
            "terraform": self.terraform_resources(),
        }
        for kind in KINDS:
            for name in sorted(listed[kind] - actual[kind]):
                self.error(srd, f"{kind} {name} is documented but no longer exists in the code")
            for name in sorted(actual[kind] - listed[kind]):
                self.error(
                    srd, f"{kind} {name} exists in the code but has no SRD entry and doc section"
                )

    def check_commands_in_docs(self, commands: dict[str, set[str]], endpoints: set[str]) -> None:
        paths = {e.split(" ", 1)[1] for e in endpoints}
        texts = [*self.docs, self.root / "README.md", self.root / "infra/terraform/README.md"]
        for doc in texts:
            if not doc.exists():
                continue
            text = doc.read_text()
            for line in _code_lines(text):
                for tool, rest in INVOCATION.findall(line):
                    if tool.endswith("bitnet"):
                        words = rest.split()
                        if not words or not re.fullmatch(r"[a-z][a-z-]*", words[0]):
                            continue
                        command, rest = words[0], " ".join(words[1:])
                        if command not in commands:
                            known = ", ".join(sorted(commands))
                            self.error(doc, f"`bitnet {command}` is not a command (have: {known})")
                            continue
                    else:
                        command = SCRIPTS[tool]
                    for flag in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", rest):
                        if flag not in commands.get(command, set()):
                            self.error(doc, f"`{tool} ... {flag}`: {command} has no {flag} flag")
            for method, path in re.findall(r"\b(GET|POST|PUT|DELETE) (/[\w/.-]*)", text):
                if f"{method} {path}" not in endpoints:
                    self.error(doc, f"`{method} {path}` is not an endpoint of the server")
            for path in re.findall(r"(?<![\w.])(/v1/[\w/.-]*\w)", text):
                if path not in paths:
                    self.error(doc, f"{path} is not an endpoint of the server")
            events, metrics = self.telemetry()
            in_event_table = False
            for line in text.splitlines():
                cells = [c.strip() for c in line.strip().strip("|").split("|")]
                if line.lstrip().startswith("|") and cells and cells[0] == "event":
                    in_event_table = True
                    continue
                if not line.lstrip().startswith("|"):
                    in_event_table = False
                elif in_event_table and re.fullmatch(r"`[a-z_]+`", cells[0]):
                    name = cells[0].strip("`")
                    if name not in events:
                        self.error(doc, f"telemetry event `{name}` is not emitted by the code")
            for paragraph in re.split(r"\n\s*\n", text):
                if "metric" not in paragraph.lower():
                    continue  # bitnet_* names elsewhere are keys, not metrics
                for name in re.findall(r"`(bitnet_[a-z_]+)`", paragraph):
                    if name not in metrics:
                        self.error(doc, f"metric `{name}` is not exported by the server")

    def exit_codes(self) -> tuple[set[int], dict[str, set[int]]]:
        """(every exit code, codes by command): EXIT_CODES and COMMAND_EXIT_CODES."""
        cli = self.cli()
        return set(cli["exit_codes"]), {k: set(v) for k, v in cli["command_exit_codes"].items()}

    def check_exit_codes(self, commands: dict[str, set[str]]) -> None:
        every, by_command = self.exit_codes()
        if not every:
            self.error("python/bitnet/cli/exits.py", "no EXIT_CODES to check the docs against")
            return
        mention = re.compile(
            r"(?:\bbitnet\s+(?P<command>[a-z][a-z-]*)\b|(?P<script>run_inference_server\.py|"
            r"run_inference\.py|setup_env\.py))"
            r"|\bexit(?:s|ing)?(?:\s+(?:with\s+)?(?:code|status))?\s+(?P<code>\d+)\b",
            re.I,
        )
        texts = [*self.docs, self.root / "README.md"]
        for doc in texts:
            if not doc.exists():
                continue
            for paragraph in re.split(r"\n\s*\n", doc.read_text()):
                command: str | None = None
                for m in mention.finditer(paragraph):
                    if m.group("command") in commands:
                        command = m.group("command")
                    elif m.group("script"):
                        command = SCRIPTS[m.group("script")]
                    elif m.group("code") is not None:
                        code = int(m.group("code"))
                        if command in by_command and code not in by_command[command]:
                            used = ", ".join(str(c) for c in sorted(by_command[command]))
                            self.error(
                                doc,
                                f"says `bitnet {command}` exits {code}, but it exits with one "
                                f"of {used} (COMMAND_EXIT_CODES in bitnet/cli/exits.py)",
                            )
                        elif command not in by_command and code not in every:
                            self.error(doc, f"exit code {code} is not one the CLI uses")

    def check_version_entries(self) -> None:
        version = self.current_version()
        if not version:
            self.error(
                "pyproject.toml", "no version: tag a release (vX.Y.Z) or set fallback_version"
            )
            return
        for rel, pattern in (
            ("docs/roadmap.md", rf"^#+ .*\b{re.escape(version)}\b"),
            ("docs/iteration-log.md", rf"^#+ .*\b{re.escape(version)}\b"),
            ("CHANGELOG.md", rf"^## \[{re.escape(version)}\] - \d{{4}}-\d{{2}}-\d{{2}}"),
        ):
            path = self.root / rel
            if not path.exists():
                self.error(rel, "missing")
            elif not re.search(pattern, path.read_text(), re.M):
                self.error(rel, f"no entry (heading) for the current version {version}")

    def check_checklist(self) -> None:
        path = self.root / "docs/documentation-review-checklist.md"
        if not path.exists():
            self.error("docs/documentation-review-checklist.md", "missing")
            return
        text = path.read_text()
        for item in re.findall(r"^\s*- \[ \] (.+)$", text, re.M):
            self.error(path, f"unticked item: {item}")
        if not re.search(r"^\s*- \[x\] ", text, re.M | re.I):
            self.error(path, "has no ticked items")
        for doc in self.docs:
            if doc.name not in text and doc != path:
                self.error(path, f"does not list {doc.relative_to(self.root)}")

    def run(self) -> list[str]:
        commands = self.cli_commands()
        endpoints = self.endpoints()
        self.check_review_dates()
        self.check_srd(commands, endpoints)
        self.check_commands_in_docs(commands, endpoints)
        self.check_exit_codes(commands)
        self.check_version_entries()
        self.check_checklist()
        return self.errors


def _doc_name(kind: str, name: str) -> str:
    if kind == "endpoint":
        return name.split(" ", 1)[1]
    if kind == "terraform":
        return name
    return name


def _code_lines(text: str) -> list[str]:
    """Lines of fenced code blocks (continuations joined) and inline code spans."""
    lines: list[str] = []
    in_block = False
    pending = ""
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            in_block = not in_block
            continue
        if in_block or line.startswith("    "):
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            lines.append(pending + line)
            pending = ""
        else:
            lines.extend(re.findall(r"`([^`]+)`", line))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1])
    args = parser.parse_args(argv)
    errors = Checker(args.root.resolve()).run()
    for error in errors:
        print(f"docs-sync: {error}", file=sys.stderr)
    if errors:
        print(f"docs-sync: {len(errors)} problem(s)", file=sys.stderr)
        return 1
    print("docs-sync: docs match the code")
    return 0


if __name__ == "__main__":
    sys.exit(main())
