"""dvc.yaml is the true map of the pipeline: every project module a stage imports (transitively, lazy
imports inside functions included) is one of its deps, params are declared by key, and the release
flow takes the stage order from DVC's graph."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PROJECT_PACKAGES = ("edgedistill", "tasks", "flows")
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())
STAGES = {
    name: s for name, s in DVC["stages"].items() if re.match(r"python -m tasks\.\w+", s["cmd"])
}


def module_file(name: str) -> Path | None:
    """The project file a dotted module name is loaded from (None: not a project module)."""
    if name.split(".")[0] not in PROJECT_PACKAGES:
        return None
    base = ROOT.joinpath(*name.split("."))
    for f in (base.with_suffix(".py"), base / "__init__.py"):
        if f.is_file():
            return f
    return None


def imported_modules(path: Path) -> set[str]:
    """Dotted names of the modules a file imports anywhere in its body (function-level imports too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            # `from pkg import mod` imports the submodule pkg.mod when there is one
            found.update(
                f"{node.module}.{a.name}"
                for a in node.names
                if module_file(f"{node.module}.{a.name}")
            )
    return found


def project_closure(start: Path) -> set[str]:
    """Repo-relative paths of every project file `start` loads, itself included. Package __init__ files
    count only when they hold code (an empty one cannot change a result)."""
    seen: set[Path] = set()
    todo = [start]
    while todo:
        f = todo.pop()
        if f in seen:
            continue
        seen.add(f)
        for mod in imported_modules(f):
            parts = mod.split(".")
            for i in range(
                1, len(parts) + 1
            ):  # importing a.b.c runs a/__init__ and a/b/__init__ first
                g = module_file(".".join(parts[:i]))
                if g is not None and g not in seen:
                    todo.append(g)
    return {
        str(f.relative_to(ROOT))
        for f in seen
        if f.name != "__init__.py" or _code(ast.parse(f.read_text()).body)
    }


def _code(body: list) -> list:
    """A module's statements less its docstring (a package __init__ holding only its docstring runs
    nothing a stage depends on)."""
    doc = body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
    return body[1:] if doc else body


def stage_file(stage: dict) -> Path:
    return ROOT / "tasks" / (re.match(r"python -m tasks\.(\w+)", stage["cmd"]).group(1) + ".py")


def test_closure_sees_lazy_and_from_imports():
    got = project_closure(ROOT / "tasks/distill.py")
    assert {
        "tasks/distill.py",
        "edgedistill/train/training.py",
        "edgedistill/train/bank.py",
        "edgedistill/train/kd.py",
        "edgedistill/train/nets.py",
        "edgedistill/errors.py",
    } <= got
    assert not any(p.startswith(("flows/", "edgedistill/cli")) for p in got)


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_deps_list_every_project_module_it_imports(name):
    stage = STAGES[name]
    deps = {d if isinstance(d, str) else next(iter(d)) for d in stage.get("deps", [])}
    missing = sorted(project_closure(stage_file(stage)) - deps)
    assert not missing, f"dvc.yaml stage {name!r} imports {missing} but does not list them as deps"
    # module files, never whole package directories (a directory dep re-runs on any edit in it)
    assert not {d for d in deps if d.rstrip("/") in PROJECT_PACKAGES}


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_params_declared_by_key(name):
    for p in STAGES[name].get("params", []):
        keys = list(p) if isinstance(p, dict) else [p]
        for k in keys:
            assert "." in k, (
                f"stage {name!r} declares the whole params section {k!r}; declare the keys it reads"
            )


@pytest.fixture
def shuffled_project(tmp_path):
    """A DVC project whose dvc.yaml lists the stages in reverse: the order must come from the graph."""
    from dvc.repo import Repo

    Repo.init(str(tmp_path), no_scm=True).close()
    raw = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    raw["stages"] = dict(reversed(list(raw["stages"].items())))
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    return tmp_path


def test_stage_order_comes_from_dvc_graph(shuffled_project):
    from edgedistill.pipeline import pipeline_stages

    order = pipeline_stages(shuffled_project)
    assert list(STAGES)[::-1] == list(
        yaml.safe_load((shuffled_project / "dvc.yaml").read_text())["stages"]
    )
    assert sorted(order) == sorted(STAGES)
    # every stage runs after the stages that produce its deps
    for name in order:
        later = {
            str(next(iter(o))) if isinstance(o, dict) else str(o)
            for n in order[order.index(name) + 1 :]
            for o in DVC["stages"][n].get("outs", []) + DVC["stages"][n].get("metrics", [])
        }
        deps = {d for d in DVC["stages"][name].get("deps", []) if isinstance(d, str)}
        deps |= {
            str(Path(d).parent) for d in deps
        }  # data/prepared/train.npz comes from data/prepared
        assert not deps & later, f"{name} runs before the stage producing {deps & later}"
    assert (
        order.index("ingest")
        < order.index("validate")
        < order.index("prepare")
        < order.index("promote")
    )


def test_ingest_left_out_when_readings_are_the_users(shuffled_project):
    from edgedistill.pipeline import pipeline_stages

    assert "ingest" in pipeline_stages(shuffled_project, connected_only=True)
    params = shuffled_project / "params.yaml"
    params.write_text(
        params.read_text().replace(
            "readings: data/raw/readings.parquet", "readings: data/mine.parquet"
        )
    )
    assert "ingest" not in pipeline_stages(shuffled_project, connected_only=True)
    assert "ingest" in pipeline_stages(shuffled_project)  # still runnable when named


def test_s3_readings_feed_prepare_through_the_manifest(shuffled_project):
    """With data.readings on S3, validate writes the manifest of every object read and prepare depends
    on it (not on the prefix): a changed object re-runs exactly what it feeds; ingest is left out."""
    from edgedistill.data.s3data import MANIFEST
    from edgedistill.pipeline import pipeline_stages

    outs = [next(iter(o)) if isinstance(o, dict) else o for o in DVC["stages"]["validate"]["outs"]]
    assert MANIFEST in outs
    assert MANIFEST in DVC["stages"]["prepare"]["deps"]
    assert "${data.readings}" not in DVC["stages"]["prepare"]["deps"]
    params = shuffled_project / "params.yaml"
    params.write_text(
        params.read_text().replace(
            "readings: data/raw/readings.parquet", "readings: s3://fleet/readings/"
        )
    )
    order = pipeline_stages(shuffled_project, connected_only=True)
    assert "ingest" not in order and order.index("validate") < order.index("prepare")


PREPARED = "data/prepared"
PREPARED_READS = {"train", "val", "test", "norm.json"}  # what a stage may read inside data/prepared
# a module serving two stages: the function each stage's command runs
ENTRY = {"train_teacher": "train_stage", "teacher_test": "test_stage"}


def prepared_reads(tree: ast.AST) -> set[str]:
    """The files under data/prepared a stage's code names: split names and norm.json as string
    constants, `data/prepared/<x>` paths, and load_prepared's `splits` (all three by default) with
    norm.json. An over-approximation: a name in a message counts too."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if node.value in PREPARED_READS:
                found.add(node.value)
            elif node.value.startswith(PREPARED + "/") and not any(c.isspace() for c in node.value):
                found.add(node.value.split("/")[2])  # a path, not a docstring that starts with one
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "load_prepared":
            found.add("norm.json")
            if not any(k.arg == "splits" for k in node.keywords):
                found |= {"train", "val", "test"}
    return found


def test_stages_list_the_prepared_files_they_read():
    """No stage depends on all of data/prepared (a change to the test split would re-run training): each
    lists the splits and files its code reads, and only those prepare writes for stages to read."""
    checked = set()
    for name, stage in STAGES.items():
        outs = {str(next(iter(o))) if isinstance(o, dict) else o for o in stage.get("outs", [])}
        if PREPARED in outs:
            continue
        deps = {d for d in stage.get("deps", []) if isinstance(d, str)}
        assert PREPARED not in deps, f"stage {name!r} depends on all of {PREPARED}"
        listed = {d.split("/")[2] for d in deps if d.startswith(PREPARED + "/")}
        assert listed <= PREPARED_READS, f"stage {name!r} lists {sorted(listed - PREPARED_READS)}"
        if name in ENTRY:
            tree = ast.parse(stage_file(stage).read_text())
            reads = prepared_reads(
                next(
                    n
                    for n in ast.walk(tree)
                    if isinstance(n, ast.FunctionDef) and n.name == ENTRY[name]
                )
            )
        else:
            # the stage module and the library modules it lists that name data/prepared (promote reads the
            # candidate's test windows through edgedistill/release/candidate.py)
            code = [stage_file(stage)] + [
                ROOT / d
                for d in sorted(deps)
                if d.endswith(".py") and ROOT / d != stage_file(stage)
            ]
            code = [f for f in code if PREPARED in f.read_text()]
            if not code:
                continue  # reads nothing prepared (validate names the splits of its own params)
            reads = set().union(*(prepared_reads(ast.parse(f.read_text())) for f in code))
        assert reads <= listed, (
            f"dvc.yaml stage {name!r} reads {sorted(reads - listed)} of {PREPARED} but does not list it"
        )
        checked.add(name)
    assert {"train_teacher", "teacher_test", "teacher_logits", "distill", "promote"} <= checked
    # the teacher is trained without the test split, and tested without the training splits
    assert "test" not in prepared_reads(
        next(
            n
            for n in ast.walk(ast.parse((ROOT / "tasks/train_teacher.py").read_text()))
            if isinstance(n, ast.FunctionDef) and n.name == "train_stage"
        )
    )
