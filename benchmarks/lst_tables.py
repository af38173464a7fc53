"""The LST paper's Tables 1 and 2: a thin script over `experiments.tables` (the same as `blindspots tables`).

    python -m benchmarks.lst_tables [--model SPEC[,SPEC...]] [--iterations N] [--out DIR]
    torchrun --nproc-per-node 2 -m benchmarks.lst_tables --out blindspots-out/lst
"""

from experiments.tables import main

if __name__ == "__main__":
    raise SystemExit(main())
