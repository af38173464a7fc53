"""`python -m benchmarks`: run every benchmark script present and print all ratios together (see run_all.py)."""

from benchmarks.run_all import main

raise SystemExit(main())
