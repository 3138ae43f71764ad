"""Fuzz bitnet's model loading with damaged GGUF files and report what happened.

    python benchmarks/fuzz_gguf.py                     # 5,000 mutants, crash-isolated children
    python benchmarks/fuzz_gguf.py -n 20000 --seed 7   # a larger or another corpus
    python benchmarks/fuzz_gguf.py --atheris -runs=20000   # coverage-guided (atheris/libFuzzer)

The default mode writes structure-aware mutants of three real-format models (BitNet in the
project's layout, the same in bitnet.cpp's I2_S layout, a llama-architecture model; see
``bitnet.testing.fuzz``) and loads each in a child process, then generates a few tokens from
the ones that load. It prints the outcomes (loaded / refused with ModelLoadError / crash /
hang), the exceptions by type, the outcomes by mutation, and keeps every file that crashed or
hung in ``--keep`` to reproduce. Exit status 1 when anything crashed, hung, or was refused with
another exception than ModelLoadError.

``--atheris`` runs libFuzzer through atheris (``pip install atheris``) in this process, guided
by the coverage of bitnet's Python GGUF reader and converter, starting from the same three
files; the native loader is exercised on every input but is not coverage-instrumented. A crash
there ends the run with libFuzzer's report and the input saved as ``crash-*``. Arguments after
``--atheris`` go to libFuzzer (``-runs=N``, ``-max_total_time=S``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path


def corpus(args: argparse.Namespace) -> int:
    from bitnet.testing.fuzz import run_corpus

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bitnet-fuzz-"))
    t0 = time.perf_counter()

    def progress(done: int, result) -> None:
        if done % 1000 == 0:
            rate = done / (time.perf_counter() - t0)
            print(f"  {done} files, {dict(result.outcomes)} ({rate:.0f} files/s)", file=sys.stderr)

    result = run_corpus(
        work,
        args.n,
        seed=args.seed,
        timeout=args.timeout,
        keep_failures=args.keep,
        progress=progress,
    )
    report = result.to_dict()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{result.files} mutated GGUF files, seed {args.seed}, {report['seconds']} s")
        for outcome, count in sorted(result.outcomes.items()):
            print(f"  {outcome:<8} {count}")
        print("refused with:", dict(result.errors))
        print("loaded, then failed to generate with:", dict(result.use_errors))
        print(f"{'mutation':<16} outcomes")
        for kind, outcomes in report["by_mutation"].items():
            print(f"  {kind:<14} {outcomes}")
        for failure in result.failures:
            print(
                f"FAILURE {failure['mutant']}: {failure['outcome']} ({failure['error']}) "
                f"{failure.get('file', '')}"
            )
        for other in result.unexpected:
            print(f"UNEXPECTED {other['mutant']}: {other['error']}: {other['message']}")
    return 1 if result.crashes or result.unexpected else 0


def coverage_guided(libfuzzer_args: list[str]) -> int:
    import atheris

    import bitnet
    import bitnet.formats.convert
    import bitnet.model
    from bitnet.formats.gguf import read_gguf
    from bitnet.testing.fuzz import base_models

    # instrument_imports() misses modules that an editable install loads through its own
    # finder; instrumenting what is loaded by now covers bitnet's Python readers either way.
    atheris.instrument_all()

    work = Path(tempfile.mkdtemp(prefix="bitnet-atheris-"))
    seeds = work / "seeds"
    seeds.mkdir()
    for name, info in base_models(work / "bases").items():
        (seeds / f"{name}.gguf").write_bytes(Path(info["path"]).read_bytes())
    path = work / "input.gguf"
    import os

    os.environ["BITNET_CACHE_DIR"] = str(work / "cache")

    def one_input(data: bytes) -> None:
        path.write_bytes(data)
        with contextlib.suppress(bitnet.ModelLoadError):
            read_gguf(path)
        try:
            with bitnet.Model(path, n_ctx=32, n_threads=1) as m:
                m.generate("Hi", max_tokens=2, temperature=0)
        except bitnet.ModelLoadError:
            pass
        except (bitnet.EngineError, ValueError):
            pass  # a damaged model that loads may fail to generate: an ordinary error
        for converted in (work / "cache" / "converted").glob("*.gguf"):
            converted.unlink()

    atheris.Setup([sys.argv[0], *libfuzzer_args, str(work / "corpus"), str(seeds)], one_input)
    (work / "corpus").mkdir(exist_ok=True)
    atheris.Fuzz()
    return 0


def main() -> int:
    if "--atheris" in sys.argv:
        rest = sys.argv[sys.argv.index("--atheris") + 1 :]
        return coverage_guided(rest)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=5000, help="mutated files (default 5000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds before a hang")
    parser.add_argument("--keep", default="fuzz-failures", help="folder for crashing files")
    parser.add_argument("--work", default=None, help="working folder (default: a temporary one)")
    parser.add_argument("--json", action="store_true")
    return corpus(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
