"""``python -m bench``: every benchmark, one table (see bench/all.py)."""

import sys

from bench.all import main

sys.exit(main())
