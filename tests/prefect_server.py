"""One real `prefect server` for the whole test session (per xdist worker), started on first use on a
free port with its own PREFECT_HOME (its SQLite DB: `home / "prefect.db"`).

`edgedistill run` without PREFECT_API_URL starts a temporary server of its own for each run (a Python
process importing Prefect's server and opening its DB: seconds of CPU each time, ~20 times in this
suite). The release tests pass `prefect_server.env` to the runs whose flow they check instead; the
runs that must not start a flow at all (the no-op shortcuts) and the real-pipeline test keep the
default, temporary-server path, so that path stays covered. CLI `promote --to prod` calls never get
the shared server's URL: with a server configured, promote announces the assignment as an event, and
test_operations' automations listen on this server."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

BIN = str(Path(sys.executable).parent)


@dataclass(frozen=True)
class PrefectServer:
    api: str
    home: Path

    @property
    def env(self) -> dict[str, str]:
        """What a subprocess needs to run its flows on this server."""
        return {"PREFECT_API_URL": self.api}

    @property
    def db(self) -> Path:
        return self.home / "prefect.db"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout: float) -> None:
    import urllib.request

    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise AssertionError(
                f"process exited {proc.returncode}: {proc.stdout.read() if proc.stdout else ''}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} not up after {timeout}s")


def stop(proc: subprocess.Popen) -> str:
    proc.terminate()
    try:
        out, _ = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out or ""


def server_env(home: Path, api: str, project: Path | None = None) -> dict[str, str]:
    env = {
        **os.environ,
        "PATH": BIN + os.pathsep + os.environ["PATH"],
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_API_URL": api,
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
    if project:
        env["PYTHONPATH"] = str(project)
    return env


# A migrated Prefect DB shared by the session's Prefect homes (seed_home): a fresh SQLite DB runs Prefect's
# ~100 migrations, ~5 s of CPU, at every server's first start. Under pytest-xdist the controller migrates one
# in the background while the workers start (conftest.pytest_configure); TEMPLATE_VAR names its folder.
TEMPLATE_VAR = "EDGEDISTILL_TEST_PREFECT_DB"
MIGRATE = (
    "import subprocess, sys; from pathlib import Path; "
    "r = subprocess.run([sys.executable, '-m', 'prefect', 'server', 'database', 'upgrade', '-y'], "
    "capture_output=True, text=True); "
    "Path(sys.argv[1], 'migrate.log').write_text(r.stdout + r.stderr); "
    "Path(sys.argv[1], 'done' if r.returncode == 0 else 'failed').touch()"
)


def migrate_template(folder: Path) -> subprocess.Popen:
    """Start migrating `folder / "prefect.db"` in the background; `done` (or `failed`) appears beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PREFECT_HOME": str(folder), "PREFECT_LOGGING_LEVEL": "WARNING"}
    return subprocess.Popen([sys.executable, "-c", MIGRATE, str(folder)], env=env)


def seed_home(home: Path, wait: bool = True, timeout: float = 300) -> bool:
    """Copy the session's migrated DB into the Prefect home `home` (unless it has a DB), waiting for the
    migration if it is still running (`wait`); False (the home migrates itself, as without a template) when
    no template was started for this session, its migration failed or is not done and `wait` is False."""
    folder = os.environ.get(TEMPLATE_VAR)
    db = home / "prefect.db"
    if not folder or db.exists():
        return False
    folder = Path(folder)
    end = time.time() + timeout
    while not (folder / "done").exists():
        if not wait or (folder / "failed").exists() or time.time() > end:
            return False
        time.sleep(0.2)
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(folder / "prefect.db", db)
    return True


def start_server(home: Path, timeout: float = 120):
    """A `prefect server start` subprocess on a free port, its output in `home / "server.log"` (a pipe
    nobody reads would fill up and block a server that lives all session); returns (process, server)."""
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    home.mkdir(parents=True, exist_ok=True)
    seed_home(home)
    with open(home / "server.log", "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1"]
            + ["--port", str(port)],
            env=server_env(home, api),
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        wait_http(f"{api}/health", proc, timeout)
    except Exception as e:
        stop(proc)
        raise AssertionError(f"{e}\n{(home / 'server.log').read_text()[-4000:]}") from None
    return proc, PrefectServer(api=api, home=home)
