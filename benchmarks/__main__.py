"""`python -m benchmarks`: run every benchmark present; exit 1 if any missed its targets (see run_all.py)."""

from benchmarks.run_all import main

raise SystemExit(main())
