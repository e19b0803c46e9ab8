"""`python -m bench`: the benchmark (`python -m bench.soak` for the soak test)."""

import sys

from bench.run import main

sys.exit(main())
