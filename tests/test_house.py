"""The house rules: dependencies point one way, every subcommand speaks the same vocabulary and reports a user
error as one line with exit code 2, and a run folder has one writer at a time."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from blindspots.cli import commands, main
from blindspots.store import FolderInUse, RunChanged, RunStore

from conftest import REPO, subprocess_env

SHARED = ("--model", "--weights", "--out", "--device", "--seed", "--batch-size", "--quiet", "--restart")


def _imported_packages(path: Path) -> set[str]:
    """Top-level packages a module imports anywhere (module level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package, forbidden", [
    ("blindspots", {"attacks", "detectors", "experiments", "benchmarks"}),
    ("attacks", {"detectors", "experiments", "benchmarks"}),
    ("detectors", {"attacks", "experiments", "benchmarks"}),
    ("experiments", {"benchmarks"}),
])
def test_dependencies_point_one_way(package, forbidden):
    offenders = {str(p.relative_to(REPO)): sorted(_imported_packages(p) & forbidden)
                 for p in (REPO / package).rglob("*.py") if _imported_packages(p) & forbidden}
    assert not offenders, f"{package} must not import {sorted(forbidden)}: {offenders}"


def import_graph(root: Path, packages: tuple[str, ...]) -> dict[str, set[str]]:
    """module -> the project modules it imports, anywhere in its file (module level, inside functions, under
    `if TYPE_CHECKING`): every `import` and `from ... import` statement found by `ast`, relative ones resolved, each
    mapped to the longest known module (so `from pkg.sub import name` counts as importing pkg.sub)."""
    files = {}
    for package in packages:
        for path in (root / package).rglob("*.py"):
            parts = list(path.relative_to(root).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            files[".".join(parts[:-1] if is_package else parts)] = (path, is_package)

    def known(name: str) -> str | None:
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for module, (path, is_package) in files.items():
        here = module if is_package else module.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                deps |= {known(a.name) for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = here.split(".")[:len(here.split(".")) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                deps |= {known(f"{base}.{a.name}") if f"{base}.{a.name}" in files else known(base) for a in node.names}
        graph[module] = {d for d in deps if d is not None and d != module}
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan): each is at least one import cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_no_import_cycles_among_the_projects_modules():
    graph = import_graph(REPO, ("blindspots", "attacks", "detectors", "experiments", "benchmarks"))
    assert len(graph) > 90 and "blindspots.zoo" in graph["blindspots.models"]  # the graph sees the packages
    assert import_cycles(graph) == [], "import cycles (each group imports itself through the others)"


def test_the_cycle_check_finds_cycles_hidden_in_functions(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from .c import C\n")
    (pkg / "a.py").write_text("from . import b\n")
    (pkg / "b.py").write_text("import os\n\ndef f():\n    from .a import thing\n    return thing\n")
    (pkg / "sub" / "c.py").write_text("C = 1\n\ndef g():\n    import pkg.sub\n")
    (pkg / "d.py").write_text("from pkg.sub.c import C\nfrom .a import b\n")
    graph = import_graph(tmp_path, ("pkg",))
    assert graph["pkg.d"] == {"pkg.sub.c", "pkg.a"} and graph["pkg.b"] == {"pkg.a"}
    assert import_cycles(graph) == [["pkg.a", "pkg.b"], ["pkg.sub", "pkg.sub.c"]]
    (pkg / "b.py").write_text("def f():\n    return 1\n")
    (pkg / "sub" / "c.py").write_text("C = 1\n")
    assert import_cycles(import_graph(tmp_path, ("pkg",))) == []


def _edits_sys_path(path: Path) -> bool:
    """Whether a module calls sys.path.insert / append / extend anywhere."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                node.func.attr in ("insert", "append", "extend") and isinstance(node.func.value, ast.Attribute) and \
                node.func.value.attr == "path" and isinstance(node.func.value.value, ast.Name) and \
                node.func.value.value.id == "sys":
            return True
    return False


def test_no_test_edits_sys_path_or_imports_benchmarks():
    for path in (REPO / "tests").glob("*.py"):
        assert not _edits_sys_path(path), path.name
        assert "benchmarks" not in _imported_packages(path), path.name


def test_subcommands_are_registered_entry_points():
    assert {"demo", "geometry", "attack", "detect", "tables"} <= set(commands())


@pytest.mark.parametrize("name", sorted(commands()))
def test_every_subcommand_lists_the_shared_options(name, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([name, "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    missing = [o for o in SHARED if o not in text]
    assert not missing, f"blindspots {name} --help lacks {missing}"


@pytest.mark.parametrize("name", sorted(commands()))
def test_a_bad_argument_exits_2_with_one_line(name, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([name, "--batch-size", "0"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--batch-size" in err[0] and "positive integer" in err[0], err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
@pytest.mark.parametrize("name", ["demo", "attack", "detect"])
def test_missing_cuda_is_one_line_before_any_work(name, tmp_path, capsys):
    assert main([name, "--device", "cuda", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"blindspots {name}: error: --device cuda: CUDA is not available on this machine "
                   "(use --device cpu)"]
    assert not (tmp_path / "o").exists()  # refused before any work


def test_an_output_folder_that_is_a_file_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["demo", "--out", str(blocker), "--iterations", "1", "--size", "32", "--no-geometry", "--quiet"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"blindspots demo: error: output folder {blocker} is a file, not a folder"]


def test_a_folder_in_use_is_refused_and_freed_after(tmp_path):
    with RunStore(tmp_path, "job", settings={"a": 1}):
        with pytest.raises(FolderInUse, match="in use by another run"):
            RunStore(tmp_path, "job", settings={"a": 1})
    RunStore(tmp_path, "job", settings={"a": 1}).close()  # the lock went with the first store


def test_a_second_process_writing_the_same_folder_is_refused(tmp_path):
    """Two processes, one folder: the second gets one line and exit code 2 while the first holds the folder."""
    code = ("import sys, time; from blindspots.store import RunStore\n"
            "s = RunStore(sys.argv[1], 'job', settings={'who': 'first'}); print('ready', flush=True); "
            "time.sleep(30)")
    first = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                             env=subprocess_env())
    try:
        assert first.stdout.readline().strip() == "ready"
        second = subprocess.run([sys.executable, "-m", "blindspots.cli", "demo", "--out", str(tmp_path),
                                 "--device", "cpu", "--iterations", "1", "--size", "32", "--quiet"],
                                capture_output=True, text=True, env=subprocess_env(), timeout=120)
        assert second.returncode == 2
        assert second.stderr.strip().splitlines() == [
            f"blindspots demo: error: output folder {tmp_path} is in use by another run (pid {first.pid}); "
            "wait for it or choose another --out"]
    finally:
        first.kill()
        first.wait()


def test_run_store_names_what_changed(tmp_path):
    model = torch.nn.Linear(2, 2)
    x = torch.zeros(3, 2)
    RunStore(tmp_path, "job", model=model, settings={"step": 0.01, "n": 3}, inputs={"images": x}).close()
    with pytest.raises(RunChanged, match=r"changed: settings.step 0.01 -> 0.02\)"):
        RunStore(tmp_path, "job", model=model, settings={"step": 0.02, "n": 3}, inputs={"images": x})
    with pytest.raises(RunChanged, match=r"changed: input images\)"):
        RunStore(tmp_path, "job", model=model, settings={"step": 0.01, "n": 3}, inputs={"images": x + 1})
    with torch.no_grad():
        model.weight.add_(1e-7)  # the smallest change of one weight is a change
    with pytest.raises(RunChanged, match=r"changed: model weights\)"):
        RunStore(tmp_path, "job", model=model, settings={"step": 0.01, "n": 3}, inputs={"images": x})
    store = RunStore(tmp_path, "job", model=model, settings={"step": 0.01, "n": 3}, inputs={"images": x},
                     restart=True)
    store.save("s", {"t": torch.ones(2)}, {"note": "new"})
    assert store.load("s")[1] == {"note": "new"}
    store.close()


def private_imports_across_packages(root: Path, packages: tuple[str, ...]) -> list[str]:
    """`from M import _name` where M lies outside the importing module's own package: a private name is the business
    of its package (a sibling module may share it; another package may not)."""
    graph_files = {}
    for package in packages:
        for path in (root / package).rglob("*.py"):
            parts = list(path.relative_to(root).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            graph_files[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    found = []
    for module, (path, is_package) in graph_files.items():
        here = module if is_package else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom):
                continue
            base = node.module or ""
            if node.level:
                up = here.split(".")[:len(here.split(".")) - node.level + 1]
                base = ".".join(up + ([node.module] if node.module else []))
            owner = base if base in graph_files and graph_files[base][1] else base.rpartition(".")[0]
            private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
            if private and owner != here:
                found.append(f"{module}: from {base} import {', '.join(private)}")
    return found


def test_no_private_name_is_imported_across_packages():
    offenders = private_imports_across_packages(REPO, ("blindspots", "attacks", "detectors", "experiments",
                                                      "benchmarks"))
    assert not offenders, "make the name public where it lives, or keep it inside its package:\n" + "\n".join(offenders)


def test_the_private_import_check_sees_one(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    for init in (pkg / "__init__.py", pkg / "sub" / "__init__.py"):
        init.write_text("")
    (pkg / "a.py").write_text("_x = 1\n")
    (pkg / "b.py").write_text("from .a import _x\n")  # a sibling: fine
    (pkg / "sub" / "c.py").write_text("def f():\n    from ..a import _x\n")  # another package: refused
    (pkg / "sub" / "d.py").write_text("from pkg.sub import c\nfrom ..a import __doc__\n")
    assert private_imports_across_packages(tmp_path, ("pkg",)) == ["pkg.sub.c: from pkg.a import _x"]
