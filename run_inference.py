#!/usr/bin/env python3
"""Guide-compatible entry point: `python run_inference.py ...` is `bitnet run ...`.

python run_inference.py --model m.gguf --prompt "ping" --dry-run --diagnostics
"""

import sys

from bitnet.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
