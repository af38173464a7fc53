"""Benchmarks: scripts printing speed ratios measured side by side in one run (each exposes main(argv=None))."""


def torchattacks_missing() -> bool:
    """True, after saying so as a missed target, when the dev-only reference implementation is not installed."""
    import importlib.util

    if importlib.util.find_spec("torchattacks") is None:
        print("target MISSED: torchattacks is not installed (pip install torchattacks; a dev-only dependency)")
        return True
    return False
