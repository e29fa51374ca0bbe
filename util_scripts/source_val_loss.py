#!/usr/bin/env python
"""`sharded-mix val-loss` as a script: python util_scripts/source_val_loss.py --help"""

import sys

from sharded_mix.cli import main

if __name__ == "__main__":
    sys.exit(main(["val-loss", *sys.argv[1:]]))
