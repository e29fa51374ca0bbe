#!/usr/bin/env python
"""`sharded-mix link-checkpoints` as a script: python util_scripts/link_checkpoints.py --help"""

import sys

from sharded_mix.cli import main

if __name__ == "__main__":
    sys.exit(main(["link-checkpoints", *sys.argv[1:]]))
