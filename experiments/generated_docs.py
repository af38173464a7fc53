"""Documentation blocks generated from results files, so that no measured figure or verdict is copied by hand.

A block of README.md or of any Markdown page under docs/ (the documentation site) lies between two markers::

    <!-- generated:NAME -->
    ...rendered text...
    <!-- /generated:NAME -->

`BLOCKS` maps NAME to (results file, renderer): the results file (relative to the repository) is written by the
command that measures it; the renderer turns its parsed JSON into Markdown. A block without a results file (None) is
rendered from the code (the model registry's table), its renderer called with None. `python -m experiments.generated_docs`
rewrites every block; `--check` rewrites nothing and exits 1 naming each block that differs, and each registered
block that no page holds (the test suite runs it), so a sentence or table in the docs cannot drift from its numbers
nor be lost when a section moves between pages.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any, Callable, Mapping

from blindspots.errors import InputError

__all__ = ["BLOCKS", "REPO", "render_block", "update_text", "update_files", "unplaced_blocks", "main"]

REPO = Path(__file__).resolve().parents[1]

Renderer = Callable[[Any], str]


def _paper_claims(data: Any) -> str:
    from .paper_verdicts import render_markdown

    return render_markdown(data)


def _zoobot_results(data: Any) -> str:
    from .zoobot.report import render_readme

    return render_readme(data)


def _transfer_results(data: Any) -> str:
    from .transfer.report import render_docs

    return render_docs(data)


def _transfer_table(data: Any) -> str:
    from .transfer.report import render_table

    return render_table(data)


def _zoo_training(data: Any) -> str:
    from blindspots.zoo import render_training_table

    return render_training_table(data)


def _zoo_robustness(data: Any) -> str:
    from .robustness import render_zoo_robustness

    return render_zoo_robustness(data)


def _models(data: None) -> str:
    from blindspots.zoo import render_model_table

    return render_model_table(data)


# NAME -> (results file relative to the repository, or None for a block rendered from the code itself, e.g. a
# registry; renderer of the parsed JSON, or of None). Register a block here, next to nothing else: the renderer lives
# in the module that owns the results (imported when the block is rendered, so --check stays light).
BLOCKS: dict[str, tuple[str | None, Renderer]] = {
    "models": (None, _models),  # the model registry (blindspots.registry, filled by blindspots.zoo)
    "paper-claims": ("docs/results/claims.json", _paper_claims),  # blindspots paper --results-to <this file>
    "zoobot-results": ("docs/results/zoobot.json", _zoobot_results),  # blindspots zoobot --results-to <this file>
    "transfer-results": ("docs/results/transfer.json", _transfer_results),  # blindspots transfer --results-to <this>
    "transfer-table": ("docs/results/transfer.json", _transfer_table),  # the same run's largest-size detectors
    "zoo-training": ("blindspots/zoo/weights/mnist.json", _zoo_training),
    "zoo-robustness": ("blindspots/zoo/weights/mnist_robustness.json", _zoo_robustness),  # blindspots robust --zoo
}

_BLOCK = re.compile(r"(<!-- generated:(?P<name>[A-Za-z0-9_.-]+) -->\n)(?P<body>.*?)(<!-- /generated:(?P=name) -->)",
                    re.DOTALL)


def render_block(name: str, blocks: Mapping[str, tuple[str | None, Renderer]] | None = None,
                 root: Path = REPO) -> str:
    """The Markdown of block `name`, rendered from its results file (one line per error: unknown block, missing
    or unreadable results file)."""
    blocks = BLOCKS if blocks is None else blocks
    if name not in blocks:
        raise KeyError(f"generated block {name!r} is not registered in experiments.generated_docs.BLOCKS")
    rel, render = blocks[name]
    data = None
    if rel is not None:
        path = root / rel
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"generated block {name!r}: cannot read its results file {path}: {exc}") from None
    text = render(data)
    return text if text.endswith("\n") else text + "\n"


def update_text(text: str, blocks: Mapping[str, tuple[str | None, Renderer]] | None = None,
                root: Path = REPO) -> tuple[str, list[str]]:
    """`text` with every generated block re-rendered, and the names of the blocks whose content changed."""
    changed: list[str] = []

    def sub(m: re.Match) -> str:
        body = render_block(m["name"], blocks, root)
        if body != m["body"]:
            changed.append(m["name"])
        return m.group(1) + body + m.group(4)

    return _BLOCK.sub(sub, text), changed


def doc_files(root: Path = REPO) -> list[Path]:
    """README.md and every Markdown file under docs/."""
    return [p for p in [root / "README.md", *sorted((root / "docs").rglob("*.md"))] if p.is_file()]


def update_files(check: bool = False, blocks: Mapping[str, tuple[str | None, Renderer]] | None = None,
                 root: Path = REPO) -> dict[str, list[str]]:
    """Re-render the blocks of every doc file (or, with `check`, only compare); {file: changed blocks}."""
    drift: dict[str, list[str]] = {}
    for path in doc_files(root):
        old = path.read_text()
        new, changed = update_text(old, blocks, root)
        if changed:
            drift[str(path.relative_to(root))] = changed
            if not check:
                path.write_text(new)
    return drift


def unplaced_blocks(blocks: Mapping[str, tuple[str, Renderer]] | None = None, root: Path = REPO) -> list[str]:
    """The registered blocks that no doc file holds (a section moved without its block, or a block never placed)."""
    blocks = BLOCKS if blocks is None else blocks
    placed = {m["name"] for path in doc_files(root) for m in _BLOCK.finditer(path.read_text())}
    return sorted(set(blocks) - placed)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.generated_docs", description=__doc__.split("\n")[0])
    p.add_argument("--check", action="store_true", help="compare only; exit 1 when a block differs")
    args = p.parse_args(argv)
    drift = update_files(check=args.check)
    for path, names in drift.items():
        print(f"{path}: {'differs' if args.check else 'updated'}: {', '.join(names)}")
    unplaced = unplaced_blocks()
    if unplaced:
        print(f"registered but in no doc file (README.md, docs/**/*.md): {', '.join(unplaced)}")
    return 1 if (drift or unplaced) and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
