"""The documentation stays true to the code: every pointer from the product into docs/ lands on a page and section
that exist, the params reference covers every key, the results pages come from every results file, and CI builds
the site."""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import sys
from pathlib import Path

import markdown
import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC_REF = re.compile(
    r"(?<![\w./-])[\w-]+(?:/[\w.-]+)+\.md(?:#[\w-]+)?"
)  # a repository path to a page
CODE_DIRS = ("edgedistill", "tasks", "flows")


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "docs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _strings(path: Path) -> list[tuple[int, str]]:
    """Every string literal in a module (hints, messages, docstrings), adjacent literals joined as Python joins them."""
    return [
        (n.lineno, n.value)
        for n in ast.walk(ast.parse(path.read_text()))
        if isinstance(n, ast.Constant) and isinstance(n.value, str)
    ]


def _refs() -> list[tuple[str, str]]:
    found = []
    for d in CODE_DIRS:
        for path in sorted((ROOT / d).rglob("*.py")):
            for line, text in _strings(path):
                found += [(f"{path.relative_to(ROOT)}:{line}", m) for m in DOC_REF.findall(text)]
    params_yaml = (ROOT / "params.yaml").read_text()
    found += [("params.yaml", m) for m in DOC_REF.findall(params_yaml)]
    return found


def _anchors(page: Path) -> set[str]:
    md = markdown.Markdown(extensions=["toc", "tables", "fenced_code"])
    md.convert(page.read_text())

    def walk(tokens):
        for t in tokens:
            yield t["id"]
            yield from walk(t["children"])

    return set(walk(md.toc_tokens))


def test_docs_references_in_code_exist():
    refs = _refs()
    assert any(r.startswith("docs/configuration.md") for _, r in refs), (
        "the params error hint names no docs page"
    )
    broken = []
    for where, ref in refs:
        page, _, anchor = ref.partition("#")
        if not (ROOT / page).is_file():
            broken.append(f"{where}: {ref} (no such page)")
        elif anchor and anchor not in _anchors(ROOT / page):
            broken.append(f"{where}: {ref} (no section '#{anchor}' in {page})")
    assert not broken, "\n".join(broken)


def test_no_hint_points_at_the_readme():
    """How-to material lives in docs/; the README is the front page only."""
    stale = [
        f"{p.relative_to(ROOT)}:{line}: {text.strip()[:80]}"
        for d in CODE_DIRS
        for p in sorted((ROOT / d).rglob("*.py"))
        for line, text in _strings(p)
        if re.search(r"\bREADME\b", text)
    ]
    assert not stale, "\n".join(stale)


def test_reference_check_catches_a_renamed_page(tmp_path, monkeypatch):
    """The scan above fails on a pointer to a page or section that does not exist."""
    pkg = tmp_path / "edgedistill"
    pkg.mkdir()
    (pkg / "m.py").write_text(
        'HINT = "see docs/configuration.md#no-such-section and docs/renamed.md"\n'
    )
    (tmp_path / "params.yaml").write_text("")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "configuration.md").write_text(
        (ROOT / "docs" / "configuration.md").read_text()
    )
    for d in ("tasks", "flows"):
        (tmp_path / d).mkdir()
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    with pytest.raises(AssertionError) as err:
        test_docs_references_in_code_exist()
    assert "docs/renamed.md (no such page)" in str(err.value)
    assert "no section '#no-such-section'" in str(err.value)


def test_params_reference_covers_every_key():
    gen = _load("gen_params")
    text, missing = gen.render()
    assert missing == [], (
        f"params without a description (add one in edgedistill/params.py): {missing}"
    )
    for key in ("data", "prepare.split", "benchmark.profiles[]", "promote.gates", "stats"):
        assert f"## `{key}`" in text
    assert "| `fm_label_weight` | float | `0.5` |" in text


def test_results_pages_cover_every_results_file():
    gen = _load("gen_results")
    pages = gen.render(ROOT / "benchmarks" / "results")
    text = "\n".join(pages.values())
    for path in sorted((ROOT / "benchmarks" / "results").glob("*.json")):
        section = text.split(f"\n## {path.stem}\n", 1)
        assert len(section) == 2, f"{path.name} has no section"
        head = section[1].split("\n## ", 1)[0]
        assert "*date*: " in head and ("```bash" in head or "*command*: not recorded" in head), (
            path.name
        )
        doc = json.loads(path.read_text())
        if isinstance(doc, dict) and isinstance(doc.get("command"), str):
            assert doc["command"].strip().splitlines()[0] in head, path.name
    assert "(results/" not in pages["index.md"]  # links are relative to docs/results/


def test_ci_builds_the_docs():
    ci = (ROOT / ".ci" / "run").read_text()
    lines = [ln.strip() for ln in ci.splitlines()]
    assert "make docs" in lines and lines.index("make docs") > lines.index("make lint")
    makefile = (ROOT / "Makefile").read_text()
    assert "mkdocs build --strict" in makefile


@pytest.mark.parametrize("page", ["README.md", "CHANGELOG.md"])
def test_root_pages_link_to_pages_that_exist(page):
    """The README and CHANGELOG sit outside the site, so `mkdocs build --strict` does not check their links."""
    links = re.findall(r"\]\(([^)#]+?)(?:#[\w-]+)?\)", (ROOT / page).read_text())
    local = [link for link in links if "://" not in link]
    assert local, page
    missing = [link for link in local if not (ROOT / link).exists()]
    assert not missing, missing
