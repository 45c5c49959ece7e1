"""The GTO registry over a real git repo with a bare remote: versions and stage tags pushed, promote,
rollback (a roll-forward assignment, even within the same second), unassignment honoured, resolution
from a fresh clone, and the repo's identity (or a neutral fallback) on commits and tags."""

from __future__ import annotations

import json

import pytest
from conftest import REPO, make_params
from release_fixtures import BIN, git_init, sh, write_candidate

from edgedistill.errors import ParamsInvalid, ReleaseNotFound
from edgedistill.release.store import LocalStore
from edgedistill.release.trust import publish_signed
from edgedistill.versions.registry import FALLBACK_EMAIL, Registry, commit_paths
from flows.registry_ops import promote_version, registry_rows


@pytest.fixture
def repo(tmp_path):
    """Three commits, pushed to a bare `origin`."""
    root, origin = tmp_path / "repo", tmp_path / "origin.git"
    root.mkdir()
    git_init(root)
    sh(["git", "init", "-q", "--bare", "-b", "main", str(origin)], tmp_path)
    sh(["git", "remote", "add", "origin", str(origin)], root)
    for i in range(3):
        (root / "reports").mkdir(exist_ok=True)
        (root / "reports/promotion.json").write_text(
            json.dumps(
                {
                    "passed": True,
                    "candidate": {
                        "int8_accuracy": 0.8 + i / 100,
                        "kd_gain": 0.02,
                        "int8_drop": 0.004,
                        "p95_ms": 0.1,
                        "size_bytes": 20_000,
                    },
                }
            )
        )
        sh(["git", "add", "-A"], root)
        sh(["git", "commit", "-qm", f"release {i}"], root)
    sh(["git", "push", "-q", "-u", "origin", "main"], root)
    return root


def commits(root) -> list[str]:
    return sh(["git", "rev-list", "--reverse", "HEAD"], root).stdout.split()


def remote_tags(root) -> set[str]:
    out = sh(["git", "ls-remote", "--tags", "origin"], root).stdout
    return {line.split("refs/tags/")[1] for line in out.splitlines() if "^{}" not in line}


def test_register_assign_push_and_resolve(repo):
    reg = Registry(repo)
    c = commits(repo)
    assert reg.versions("student") == [] and reg.next_version("student") == "v0.1.0"
    tags = [reg.register("student", "v0.1.0", c[0]), reg.assign("student", "v0.1.0", "staging")]
    assert tags == ["student@v0.1.0", "student#staging#1"]
    assert (
        reg.next_version("student", "minor") == "v0.2.0"
        and reg.next_version("student", "patch") == "v0.1.1"
    )
    tags += [reg.register("student", "v0.2.0", c[1]), reg.assign("student", "v0.2.0", "staging")]
    assert reg.assign("student", "v0.2.0", "staging") is None  # already there: no new tag
    assert reg.resolve("student", "staging").version == "v0.2.0"
    assert reg.resolve("student", "prod") is None
    assert (
        reg.at_commit("student", c[1]).version == "v0.2.0"
        and reg.at_commit("student", c[2]) is None
    )
    assert reg.push(tags, branch=False) == tags
    assert remote_tags(repo) == set(tags)


def test_promote_rollback_and_resolution_after_rollback(repo, tmp_path):
    reg = Registry(repo)
    c = commits(repo)
    for i, v in enumerate(["v0.1.0", "v0.2.0", "v0.3.0"]):
        reg.register("student", v, c[i])
    reg.assign("student", "v0.1.0", "prod")
    reg.assign("student", "v0.3.0", "prod")
    assert reg.resolve("student", "prod").version == "v0.3.0"
    rollback = reg.assign("student", "v0.1.0", "prod")
    assert rollback.startswith("student#prod#")
    assert reg.resolve("student", "prod").version == "v0.1.0"
    assert {v.version: v.stages for v in reg.versions("student")} == {
        "v0.3.0": [],
        "v0.2.0": [],
        "v0.1.0": ["prod"],
    }
    reg.push([t for t in sh(["git", "tag"], repo).stdout.split()], branch=False)

    clone = tmp_path / "clone"
    sh(["git", "clone", "-q", str(tmp_path / "origin.git"), str(clone)], tmp_path)
    assert Registry(clone).resolve("student", "prod").version == "v0.1.0"


def test_same_second_assignments_resolve_by_gto_counter(repo):
    reg = Registry(repo)
    c = commits(repo)
    reg.register("student", "v0.1.0", c[0])
    reg.register("student", "v0.2.0", c[1])
    same_second = {"GIT_COMMITTER_DATE": "2030-01-01T12:00:00+0000"}
    for n, commit in [(3, c[1]), (4, c[0])]:  # promote v0.2.0, then roll back to v0.1.0
        sh(["git", "tag", "-a", f"student#prod#{n}", commit, "-m", "assign"], repo, env=same_second)
    assert reg.resolve("student", "prod").version == "v0.1.0"
    sh(["git", "tag", "-a", "student#prod#5", c[1], "-m", "assign"], repo, env=same_second)
    assert reg.resolve("student", "prod").version == "v0.2.0"


def test_a_promotion_that_loses_the_tag_race_is_a_registry_error(repo):
    """Two promotions at once compute the same `student#prod#N`; the loser finds git's lock file for it (left
    here by hand, as the winner holds it) and fails with the registry's one-line error, never a traceback
    (libgit2 reports it as an OSError: "failed to create locked file ….lock': File exists"). Nothing changed."""
    from edgedistill.versions.registry import RegistryError

    reg = Registry(repo)
    reg.register("student", "v0.1.0", commits(repo)[0])
    lock = repo / ".git/refs/tags/student#prod#1.lock"
    lock.write_text("")
    before = sh(["git", "tag", "--list"], repo).stdout
    with pytest.raises(RegistryError, match="another promotion created the same stage tag") as err:
        reg.assign("student", "v0.1.0", "prod")
    assert "run it again" in err.value.hint and sh(["git", "tag", "--list"], repo).stdout == before
    lock.unlink()
    assert reg.assign("student", "v0.1.0", "prod") == "student#prod#1"
    # the same for two releases registering the same version at once
    (repo / ".git/refs/tags/student@v0.2.0.lock").write_text("")
    with pytest.raises(RegistryError, match="another release registered the same version"):
        reg.register("student", "v0.2.0", commits(repo)[1])
    assert [v.version for v in reg.versions("student")] == ["v0.1.0"]


def test_unassign_tag_is_honoured(repo):
    from edgedistill.versions.gtoapi import unassign

    reg = Registry(repo)
    c = commits(repo)
    reg.register("student", "v0.1.0", c[0])
    reg.register("student", "v0.2.0", c[1])
    reg.assign("student", "v0.1.0", "prod")
    reg.assign("student", "v0.2.0", "prod")
    unassign(str(repo), "student", stage="prod", version="v0.2.0")  # `student#prod!#N`
    assert reg.resolve("student", "prod").version == "v0.1.0"
    unassign(str(repo), "student", stage="prod", version="v0.1.0")
    assert reg.resolve("student", "prod") is None


def test_unknown_version_and_stage(repo):
    reg = Registry(repo)
    reg.register("student", "v0.1.0", commits(repo)[0])
    with pytest.raises(
        ReleaseNotFound, match=r"v0.4.0 is not a registered version \(registered: v0.1.0\)"
    ):
        reg.get("student", "0.4.0")
    (repo / ".gto").write_text("stages: [staging, prod]\n")
    with pytest.raises(ParamsInvalid, match="unknown stage 'production'"):
        reg.assign("student", "v0.1.0", "production")


def test_promote_version_needs_the_bundle_in_the_store(repo, tmp_path):
    params = make_params(
        {"store": {"local": str(tmp_path / "store")}, "promote": {"push_git": True}}
    )
    reg = Registry(repo)
    reg.register("student", "v0.1.0", commits(repo)[0])
    with pytest.raises(ReleaseNotFound, match="has no bundle"):
        promote_version(repo, params, "v0.1.0", "prod")
    assert reg.resolve("student", "prod") is None
    files = write_candidate(tmp_path / "c")
    card = tmp_path / "c/model_card.json"
    card.write_text(json.dumps({"model": "student", "version": "v0.1.0"}))
    publish_signed(
        LocalStore(tmp_path / "store"), "student", "v0.1.0", {**files, "model_card.json": card}
    )
    r = promote_version(repo, params, "v0.1.0", "prod")
    assert r["changed"] and r["previous"] is None and r["pushed"] == [r["tag"]]
    assert "student#prod#" in r["tag"] and r["tag"] in remote_tags(repo)
    again = promote_version(repo, params, "v0.1.0", "prod")
    assert not again["changed"] and again["tag"] is None
    rows = registry_rows(repo, params)
    assert rows[0]["version"] == "v0.1.0" and rows[0]["stages"] == ["prod"]
    assert rows[0]["int8_accuracy"] == pytest.approx(0.8)


def test_cli_promote_and_registry(repo, tmp_path):
    store = tmp_path / "store"
    (repo / "params.yaml").write_text(
        (REPO / "params.yaml").read_text().replace("local: ../edgedistill-store", f"local: {store}")
    )
    reg = Registry(repo)
    c = commits(repo)
    for i, v in enumerate(["v0.1.0", "v0.2.0"]):
        reg.register("student", v, c[i])
        files = write_candidate(tmp_path / v)
        card = tmp_path / v / "model_card.json"
        card.write_text(json.dumps({"model": "student", "version": v}))
        publish_signed(LocalStore(store), "student", v, {**files, "model_card.json": card})
    ed = f"{BIN}/edgedistill"
    assert (
        "promoted student prod: — → v0.2.0"
        in sh([ed, "promote", "v0.2.0", "--to", "prod"], repo).stdout
    )
    out = sh([ed, "promote", "v0.1.0", "--to", "prod"], repo).stdout
    assert "rolled back student prod: v0.2.0 → v0.1.0" in out
    rows = json.loads(sh([ed, "registry", "--json"], repo).stdout)
    assert [(r["version"], r["stages"]) for r in rows] == [("v0.2.0", []), ("v0.1.0", ["prod"])]
    # readable in an 80-column terminal: nothing cut to "…", every line within 80
    table = sh([ed, "registry"], repo, env={"COLUMNS": "80"}).stdout
    assert "…" not in table and max(len(line) for line in table.splitlines()) <= 80, table
    assert "v0.2.0" in table and "prod" in table and "%" in table
    bad = sh([ed, "promote", "v0.9.0"], repo, check=False)
    assert bad.returncode == 2 and "v0.9.0 is not a registered version" in bad.stdout + bad.stderr
    assert "Traceback" not in bad.stdout + bad.stderr


def test_commits_use_repo_identity_or_a_neutral_fallback(tmp_path, monkeypatch):
    root = tmp_path / "r"
    root.mkdir()
    sh(["git", "init", "-q"], root)
    # no identity anywhere: global config hidden, nothing in the repo
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "empty-gitconfig"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for k in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL"):
        monkeypatch.delenv(k, raising=False)
    (root / "dvc.lock").write_text("schema: '2.0'\n")
    sha = commit_paths(root, ["dvc.lock"], "release")
    assert sha and commit_paths(root, ["dvc.lock"], "nothing changed") is None
    who = sh(["git", "log", "-1", "--format=%an <%ae>|%cn <%ce>"], root).stdout.strip()
    assert who == f"edgedistill release <{FALLBACK_EMAIL}>|edgedistill release <{FALLBACK_EMAIL}>"
    Registry(root).register("student", "v0.1.0", sha)
    tagger = sh(
        ["git", "for-each-ref", "refs/tags/student@v0.1.0", "--format=%(taggeremail)"], root
    ).stdout
    assert FALLBACK_EMAIL in tagger
    assert not (tmp_path / "empty-gitconfig").exists()  # global config untouched

    sh(["git", "config", "user.name", "Ada"], root)
    sh(["git", "config", "user.email", "ada@example.org"], root)
    (root / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    commit_paths(root, ["dvc.lock"], "release 2")
    assert (
        sh(["git", "log", "-1", "--format=%an <%ae>"], root).stdout.strip()
        == "Ada <ada@example.org>"
    )


def test_importing_gto_leaves_the_process_logging_handlers_alone(tmp_path):
    """gto configures logging at import (dictConfig), which closes every handler already installed:
    inside a Prefect flow that drained Prefect's log and event queues, a 5 s stall in each release.
    Through edgedistill.versions.gtoapi the handlers stay open and gto's logger still gets its level."""
    import subprocess
    import sys

    code = """
import logging
class Probe(logging.Handler):
    closed = False
    def emit(self, record): pass
    def close(self):
        Probe.closed = True
        super().close()
probe = Probe()
logging.getLogger().addHandler(probe)
from edgedistill.versions.gtoapi import SemVer
import gto.config
assert not Probe.closed, "gto's import closed the handlers"
assert logging.getLogger().handlers == [probe]
assert logging.getLogger("gto").level == logging.getLevelName(gto.config.CONFIG.LOG_LEVEL)
print(SemVer("v1.2.3").bump(bump_minor=True).version)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.strip() == "v1.3.0", r.stderr
