#!/usr/bin/env python3
"""Set up a BitNet model on this machine: `python setup_env.py --help` (same as `bitnet setup`).

    python setup_env.py --model-dir /models --hf-repo microsoft/BitNet-b1.58-2B-4T \\
        --cache-dir /var/cache/bitnet [--from PATH] [--clean]

Stages (environment, acquire, convert, verify, warmup) are recorded in
<cache-dir>/bootstrap-state.json, so a rerun skips finished work; see bitnet.bootstrap.
"""

import sys

try:
    from bitnet.bootstrap import main
except ImportError as exc:  # the package is not installed in this interpreter
    sys.exit(f"setup_env.py: cannot import bitnet ({exc}); install it first: pip install .")

if __name__ == "__main__":
    sys.exit(main())
