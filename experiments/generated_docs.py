"""Documentation blocks generated from results files, so that no measured figure or verdict is copied by hand.

A block of README.md or of any Markdown page under docs/ (the documentation site) lies between two markers::

    <!-- generated:NAME -->
    ...rendered text...
    <!-- /generated:NAME -->

`BLOCKS` maps NAME to (results file, renderer): the results file (relative to the repository) is written by the
command that measures it; the renderer turns its parsed JSON into Markdown. A block without a results file (None) is
rendered from the code (the model registry's table), its renderer called with None. `python -m experiments.generated_docs`
rewrites every block; `--check` rewrites nothing and exits 1 naming each block that differs, each registered
block that no page holds, and each table of a generated kind (same header row) that a page holds outside any block
(the test suite runs it), so a sentence or table in the docs cannot drift from its numbers, be lost when a section
moves between pages, nor be copied by hand beside its block.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any, Callable, Mapping

from blindspots.errors import InputError

__all__ = ["BLOCKS", "REPO", "render_block", "update_text", "update_files", "unplaced_blocks", "unbacked_tables",
           "outcome_first", "main"]

REPO = Path(__file__).resolve().parents[1]

Renderer = Callable[[Any], str]


def _paper_claims(data: Any) -> str:
    from .claims.report import render_markdown

    return outcome_first(render_markdown(data))


def _paper_claims_verdicts(data: Any) -> str:
    from .claims.report import findings

    # "1. ..." after the bullet would start a nested numbered list: escape the claim number's dot
    lines = [re.sub(r"^([0-9]+'?)\.", r"\1\\.", line.split(" Per group:")[0]) for line in findings(data)]
    return "".join(f"- {line}\n" for line in lines)


def _zoobot_results(data: Any) -> str:
    from .zoobot.report import render_readme

    return outcome_first(render_readme(data))


def _zoobot_verdicts(data: Any) -> str:
    lines = []
    for command, run in data["runs"].items():
        if "arms" not in run:  # recorded under the earlier rule (every seed a veto): its section says so, not the summary
            continue
        for verdict in run["verdicts"].values():
            lines.append(f"- `{command}`: {verdict['sentence'].split('). ')[0]})." if "). " in verdict["sentence"]
                         else f"- `{command}`: {verdict['sentence']}")
    return "\n".join(lines) + "\n"


_CELL_BAR = re.compile(r"(?<!\\)\|")  # a cell boundary: a bar that the results loader did not escape
OUTCOME_COLUMNS = ("outcome", "cell")  # the verdict column of a study's table, shown first where the eye lands


def outcome_first(text: str, names: tuple[str, ...] = OUTCOME_COLUMNS) -> str:
    """`text` with the outcome column of each Markdown table moved to the front: a study's table is read for its
    verdicts, and a wide table would otherwise hide them behind a horizontal scroll."""
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        if not (lines[i].startswith("|") and i + 1 < len(lines) and set(lines[i + 1]) <= set("|-: ")):
            i += 1
            continue
        j = i
        while j < len(lines) and lines[j].startswith("|"):
            j += 1
        header = [c.strip() for c in _CELL_BAR.split(lines[i].strip()[1:-1])]
        k = next((n for n, c in enumerate(header) if c in names), None)
        if k:
            for r in range(i, j):
                cells = _CELL_BAR.split(lines[r].strip()[1:-1])
                cells.insert(0, cells.pop(k))
                lines[r] = "|" + "|".join(cells) + "|"
        i = j
    return "\n".join(lines)


def _transfer_results(data: Any) -> str:
    from .transfer.report import render_docs

    return render_docs(data)


def _transfer_verdicts(data: Any) -> str:
    runs = data.get("runs", {})
    return "".join(f"- `{command}`: {run['headline']}\n" for command, run in runs.items()) or "No run recorded yet.\n"


def _transfer_table(data: Any) -> str:
    from .transfer.report import render_table

    return render_table(data)


def _zoo_training(data: Any) -> str:
    from blindspots.zoo import render_training_table

    return render_training_table(data)


def _zoo_robustness(data: Any) -> str:
    from .robustness import render_zoo_robustness

    return render_zoo_robustness(data)


def _benchmark_runs(data: Any) -> str:
    from .benchmark_docs import render_runs

    return render_runs(data)


def _lst_passes(data: Any) -> str:
    from .benchmark_docs import render_lst_passes

    return render_lst_passes(data)


def _lst_passes_other_digits(data: Any) -> str:
    from .benchmark_docs import render_lst_passes_other_digits

    return render_lst_passes_other_digits(data)


def _detector_table(data: Any) -> str:
    from .benchmark_docs import render_detector_table

    return render_detector_table(data)


def _photo_pool(data: Any) -> str:
    from blindspots.photos import render_pool_sentence

    return render_pool_sentence(data)


def _models(data: None) -> str:
    from blindspots.zoo import render_model_table

    return render_model_table(data)


# NAME -> (results file relative to the repository, or None for a block rendered from the code itself, e.g. a
# registry; renderer of the parsed JSON, or of None). Register a block here, next to nothing else: the renderer lives
# in the module that owns the results (imported when the block is rendered, so --check stays light).
BLOCKS: dict[str, tuple[str | None, Renderer]] = {
    "models": (None, _models),  # the model registry (blindspots.registry, filled by blindspots.zoo)
    "paper-claims": ("docs/results/claims.json", _paper_claims),  # blindspots paper --results-to <this file>
    "paper-claims-verdicts": ("docs/results/claims.json", _paper_claims_verdicts),
    "zoobot-results": ("docs/results/zoobot.json", _zoobot_results),  # blindspots zoobot --results-to <this file>
    "zoobot-verdicts": ("docs/results/zoobot.json", _zoobot_verdicts),
    "transfer-results": ("docs/results/transfer.json", _transfer_results),  # blindspots transfer --results-to <this>
    "transfer-verdicts": ("docs/results/transfer.json", _transfer_verdicts),
    "transfer-table": ("docs/results/transfer.json", _transfer_table),  # the same run's largest-size detectors
    "zoo-training": ("blindspots/zoo/weights/mnist.json", _zoo_training),
    "zoo-robustness": ("blindspots/zoo/weights/mnist_robustness.json", _zoo_robustness),  # blindspots robust --zoo
    # python -m benchmarks.NAME --results-to <this file> (one file, every benchmark's runs)
    "benchmark-runs": ("docs/results/benchmarks.json", _benchmark_runs),
    "lst-passes": ("docs/results/benchmarks.json", _lst_passes),
    "lst-passes-other-digits": ("docs/results/benchmarks.json", _lst_passes_other_digits),
    "detector-table": ("docs/results/benchmarks.json", _detector_table),
    "photo-pool": ("docs/results/photo_pool.json", _photo_pool),  # python -m blindspots.photos --results-to <this>
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
    if rel is not None:  # one validated loader: schema checked, texts escaped for Markdown and HTML
        from .results_files import SCHEMAS, load_results

        try:
            data = load_results(root / rel, SCHEMAS.get(name))
        except InputError as exc:
            raise InputError(f"generated block {name!r}: {exc}") from None
    text = render(data)
    return text if text.endswith("\n") else text + "\n"


def update_text(text: str, blocks: Mapping[str, tuple[str | None, Renderer]] | None = None,
                root: Path = REPO) -> tuple[str, list[str]]:
    """`text` with every generated block re-rendered, and the names of the blocks whose content changed."""
    changed: list[str] = []

    from .results_files import check_rows_kept

    def sub(m: re.Match) -> str:
        body = render_block(m["name"], blocks, root)
        check_rows_kept(m["name"], m["body"], body, (blocks or BLOCKS).get(m["name"], (None,))[0])
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
    rewritten = []
    for path in doc_files(root):
        old = path.read_text()
        new, changed = update_text(old, blocks, root)
        if changed:
            drift[str(path.relative_to(root))] = changed
            rewritten.append((path, new))
    for path, new in rewritten if not check else ():  # only once every block rendered: a refusal writes nothing
        path.write_text(new)
    return drift


def unplaced_blocks(blocks: Mapping[str, tuple[str, Renderer]] | None = None, root: Path = REPO) -> list[str]:
    """The registered blocks that no doc file holds (a section moved without its block, or a block never placed)."""
    blocks = BLOCKS if blocks is None else blocks
    placed = {m["name"] for path in doc_files(root) for m in _BLOCK.finditer(path.read_text())}
    return sorted(set(blocks) - placed)


_TABLE_HEADER = re.compile(r"^\|.*\|[ \t]*\n\|[-:| \t]+\|[ \t]*$", re.MULTILINE)


def unbacked_tables(blocks: Mapping[str, tuple[str | None, Renderer]] | None = None, root: Path = REPO
                    ) -> list[str]:
    """Tables of the kinds the blocks generate that a page holds outside any block: a table whose header row is a
    generated table's header is a copy of measured figures that no results file backs (it would not follow a
    rerun). One "page: block" per such table."""
    blocks = BLOCKS if blocks is None else blocks
    headers = {}
    for name in blocks:
        try:
            body = render_block(name, blocks, root)
        except (InputError, OSError):
            continue  # a missing results file is reported by the blocks themselves
        for m in _TABLE_HEADER.finditer(body):
            headers[m.group(0).splitlines()[0].strip()] = name
    found = []
    for path in doc_files(root):
        outside = _BLOCK.sub("", path.read_text())
        for m in _TABLE_HEADER.finditer(outside):
            header = m.group(0).splitlines()[0].strip()
            if header in headers:
                found.append(f"{path.relative_to(root)}: a table like block {headers[header]!r} outside any "
                             "generated block")
    return found


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.generated_docs", description=__doc__.split("\n")[0])
    p.add_argument("--check", action="store_true", help="compare only; exit 1 when a block differs")
    args = p.parse_args(argv)
    try:
        drift = update_files(check=args.check)
    except InputError as exc:  # a results file that cannot be read or does not fit: one line, nothing written
        print(f"{p.prog}: error: {exc}", file=sys.stderr)
        return 2
    for path, names in drift.items():
        print(f"{path}: {'differs' if args.check else 'updated'}: {', '.join(names)}")
    unplaced = unplaced_blocks()
    if unplaced:
        print(f"registered but in no doc file (README.md, docs/**/*.md): {', '.join(unplaced)}")
    unbacked = unbacked_tables()
    for line in unbacked:
        print(f"{line}: its figures come from no results file (move them into the block's results file)")
    return 1 if (drift or unplaced or unbacked) and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
