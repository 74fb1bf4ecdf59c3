"""A real Prometheus server for tests: Debian's /usr/bin/prometheus on a free 127.0.0.1 port.

`with Prometheus({"streamer": ["127.0.0.1:9108"]}, tmp_path) as prom: prom.query("up")`

It scrapes the given targets (by job name) every second, keeps its data in a folder of the
test, is ready when /-/ready answers, is queried through its HTTP API, and is stopped by PID
(SIGTERM, then SIGKILL). A missing binary fails with the package to install: it never skips.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from streamer.server import free_port

BINARY = "/usr/bin/prometheus"
PACKAGE = "prometheus"

Series = Tuple[Dict[str, str], float]  # (labels, value) of one element of an instant vector


class Prometheus:
    def __init__(self, targets: Mapping[str, Sequence[str]], workdir: Path, scrape_interval: str = "1s",
                 binary: str = BINARY):
        self.targets = {job: list(addrs) for job, addrs in targets.items()}
        self.workdir = Path(workdir)
        self.scrape_interval = scrape_interval
        self.binary = binary
        self.port: Optional[int] = None
        self.proc: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "prometheus.log"

    def write_config(self) -> Path:
        # JSON is YAML: no YAML library needed to write the scrape config.
        config = {
            "global": {"scrape_interval": self.scrape_interval, "scrape_timeout": self.scrape_interval,
                       "evaluation_interval": self.scrape_interval},
            "scrape_configs": [{"job_name": job, "static_configs": [{"targets": addrs}]}
                               for job, addrs in self.targets.items()],
        }
        path = self.workdir / "prometheus.yml"
        path.write_text(json.dumps(config, indent=2))
        return path

    # -- life cycle -------------------------------------------------------------------------------
    def start(self, timeout: float = 90, attempts: int = 3) -> "Prometheus":
        if not Path(self.binary).is_file():
            raise AssertionError(f"{self.binary} missing: apt-get install {PACKAGE} (.ci/run and make test do)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.write_config()
        for attempt in range(attempts):
            self.port = free_port()
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    [self.binary, f"--config.file={config}", f"--storage.tsdb.path={self.workdir / 'data'}",
                     f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=1h"],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
            try:
                self._wait_ready(timeout)
                return self
            except AssertionError:
                exited = self.proc.poll() is not None
                self.stop()
                if exited and "address already in use" in self._log_tail() and attempt < attempts - 1:
                    continue  # the free port was taken meanwhile: another one
                raise
        raise AssertionError("unreachable")

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited (code {self.proc.returncode}): {self._log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise AssertionError(f"prometheus not ready after {timeout} s: {self._log_tail()}")

    def _log_tail(self, lines: int = 5) -> str:
        try:
            return " | ".join(self.log_path.read_text(errors="replace").strip().splitlines()[-lines:])
        except OSError:
            return "no log"

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    def __enter__(self) -> "Prometheus":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- the HTTP API -----------------------------------------------------------------------------
    def _api(self, path: str, **params) -> dict:
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=30) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as err:  # a bad query answers 400 with the reason in JSON
            body = json.loads(err.read() or b"{}")
        if body.get("status") != "success":
            raise AssertionError(f"prometheus {path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, promql: str) -> List[Series]:
        """An instant query: (labels, value) per series of the resulting vector."""
        data = self._api("query", query=promql)
        if data["resultType"] == "scalar":
            return [({}, float(data["result"][1]))]
        if data["resultType"] != "vector":
            raise AssertionError(f"{promql!r} gave a {data['resultType']}, not an instant vector")
        return [(series["metric"], float(series["value"][1])) for series in data["result"]]

    def targets_health(self) -> Dict[str, str]:
        """job/instance -> 'up' | 'down' | 'unknown', with the last scrape error when there is one."""
        out = {}
        for t in self._api("targets")["activeTargets"]:
            key = f"{t['labels'].get('job')}/{t['labels'].get('instance')}"
            out[key] = t["health"] + (f" ({t['lastError']})" if t.get("lastError") else "")
        return out

    def wait_for(self, promql: str, predicate: Callable[[List[Series]], bool], timeout: float = 60,
                 what: str = "") -> List[Series]:
        """Query until `predicate(result)` holds; fails with the last result and the targets' health."""
        deadline = time.monotonic() + timeout
        result: List[Series] = []
        while True:
            result = self.query(promql)
            if predicate(result):
                return result
            if time.monotonic() >= deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what or promql}: last result "
                                     f"{result}, targets {self.targets_health()}")
            time.sleep(0.5)
