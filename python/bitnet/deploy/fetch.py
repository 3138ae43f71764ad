"""Fetch a model file to a local path, resumably, checked against a sha256.

    python -m bitnet.deploy.fetch URL_OR_PATH DEST [--sha256 HEX]

Used by the Kubernetes init container (infra/terraform) and by setup_env.py. An http(s) URL is
downloaded to ``DEST.part`` (resumed with a Range request when a partial file is there), checked,
then renamed; a local path (or file:// URL) is copied the same way. An existing DEST with the
right checksum is left alone. Exit codes: 0 done, 1 failure (message on stderr).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from ..errors import FetchError
from ..formats.cache import CHUNK, sha256_of

__all__ = ["FetchError", "fetch", "sha256_of"]


def _download(url: str, part: Path, timeout: float) -> None:
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            resumed = have and response.status == 206
            with open(part, "ab" if resumed else "wb") as out:
                shutil.copyfileobj(response, out, CHUNK)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and have:  # already complete
            return
        raise FetchError(f"cannot download {url}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise FetchError(
            f"cannot download {url}: {getattr(exc, 'reason', exc)} "
            f"(rerun to resume from {part.stat().st_size if part.exists() else 0} bytes)"
        ) from exc


def fetch(
    source: str, dest: str | os.PathLike[str], *, sha256: str | None = None, timeout: float = 60.0
) -> Path:
    """Bring ``source`` (http(s) URL, file:// URL or path) to ``dest``; returns ``dest``."""
    dest = Path(dest)
    want = (sha256 or "").strip().lower() or None
    if want is not None and (len(want) != 64 or any(c not in "0123456789abcdef" for c in want)):
        raise FetchError(f"--sha256 must be 64 hex digits, got {sha256!r}")
    if dest.exists() and (want is None or sha256_of(dest) == want):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    scheme = urllib.parse.urlparse(source).scheme
    if scheme in ("http", "https"):
        _download(source, part, timeout)
    else:
        path = urllib.parse.urlparse(source).path if scheme == "file" else source
        if not os.path.isfile(path):
            raise FetchError(f"model source '{source}' is not a file or an http(s) URL")
        shutil.copyfile(path, part)
    if want is not None:
        got = sha256_of(part)
        if got != want:
            part.unlink()
            raise FetchError(
                f"sha256 of {source} is {got}, expected {want}; the download was removed"
            )
    os.replace(part, dest)
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bitnet.fetch", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("source", help="http(s) URL, file:// URL or path")
    parser.add_argument("dest", help="local file to write")
    parser.add_argument("--sha256", default="", help="expected checksum (empty: not checked)")
    parser.add_argument("--timeout", type=float, default=60.0, help="network timeout in seconds")
    args = parser.parse_args(argv)
    try:
        path = fetch(args.source, args.dest, sha256=args.sha256, timeout=args.timeout)
    except FetchError as exc:
        print(f"bitnet.fetch: error: {exc}", file=sys.stderr)
        return 1
    print(f"bitnet.fetch: {path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
