#!/usr/bin/env python
"""`sharded-mix merge` as a script: python util_scripts/merge_shards.py --help"""

import sys

from sharded_mix.cli import main

if __name__ == "__main__":
    sys.exit(main(["merge", *sys.argv[1:]]))
