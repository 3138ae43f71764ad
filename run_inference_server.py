#!/usr/bin/env python3
"""Guide-compatible entry point: `python run_inference_server.py ...` is `bitnet serve ...`.

python run_inference_server.py --model m.gguf --host 0.0.0.0
"""

import sys

from bitnet.cli import main

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))
