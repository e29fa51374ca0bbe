#!/usr/bin/env python
"""`sharded-mix data-position` as a script: python util_scripts/data_position.py --help"""

import sys

from sharded_mix.cli import main

if __name__ == "__main__":
    sys.exit(main(["data-position", *sys.argv[1:]]))
