"""Starts FreezeLab replicas on one machine: N Streamlit processes behind nginx, sticky by cookie.

`make replicas` (or `.venv/bin/python deploy/start_replicas.py [--replicas 2] [--port 8080]`)
starts, in this order:

1. With `--ray` (and Ray installed, `pip install -r requirements-ray.txt`): a Ray head
   (`ray start --head --block`, with its own temp folder and its own authentication token),
   which every replica reaches through `RAY_ADDRESS` with `FREEZELAB_EXECUTOR=ray`.
2. N `streamlit run serve.py` processes on consecutive ports (`--first-port`, 8501 by default),
   bound to 127.0.0.1, all with the same runs folder (`FREEZELAB_RUNS_DIR`), so a session can
   be rebuilt by any of them from its record on disk.
3. Debian's nginx (`apt-get install nginx`) as an unprivileged foreground process with the
   rendered `deploy/nginx.conf.template`: every path (pid, logs, temp files) is under this run's
   folder, and no system configuration is read or written.

It waits until every replica and the proxy answer `/_stcore/health`, prints the address, and
stops everything it started on Ctrl-C or SIGTERM (each process group; the Ray head's processes
with it). It stops everything too when one of the processes exits by itself, and says which.

Stickiness: nginx gives a browser without a `freezelab_route` cookie a random one and hashes it
(`hash $freezelab_route consistent`) to one replica, so a page's requests and its websocket
(`/_stcore/stream`) reach the process that holds its session. Every response names the replica
that served it in an `X-FreezeLab-Replica` header (`$upstream_addr`).

Example:
>>> from deploy.start_replicas import Replicas
>>> with Replicas(replicas=2, proxy_port=8080) as running:
...     print(running.url, running.replica_urls)
http://127.0.0.1:8080 ['http://127.0.0.1:8501', 'http://127.0.0.1:8502']
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE_PATH = Path(__file__).resolve().with_name("nginx.conf.template")
REPLICA_HEADER = "X-FreezeLab-Replica"
ROUTE_COOKIE = "freezelab_route"
NGINX_ENVIRONMENT_VARIABLE = "FREEZELAB_NGINX"
NGINX_CANDIDATES = ("nginx", "/usr/sbin/nginx", "/usr/local/sbin/nginx", "/opt/homebrew/bin/nginx")
NGINX_INSTALL_HINT = (
    "nginx was not found. Install Debian's package (`sudo apt-get install nginx`; `make "
    "replicas` and `make test` do it when run as root), or another nginx build, and put it on "
    f"PATH or point {NGINX_ENVIRONMENT_VARIABLE} at its executable."
)
RAY_INSTALL_HINT = (
    "--ray needs Ray in this environment: `.venv/bin/python -m pip install -r "
    "requirements-ray.txt`."
)
COOKIE_MAX_AGE_SECONDS = 24 * 3600
RAY_HEAD = "Ray head"
STREAMLIT_FLAGS = (
    "--server.headless", "true",
    "--server.address", "127.0.0.1",
    "--browser.gatherUsageStats", "false",
    "--server.fileWatcherType", "none",
)  # fmt: skip


class ReplicaError(RuntimeError):
    """A replica set could not start: the message says what failed and where its log is."""


# ------------------------------------------------------------------------------ helpers
def find_nginx() -> str | None:
    """The nginx executable: `$FREEZELAB_NGINX`, else `nginx` on PATH or in an sbin folder.

    Returns:
        Its path, or None when there is none (see `NGINX_INSTALL_HINT`).

    Example:
    >>> find_nginx()
    '/usr/sbin/nginx'
    """
    configured = os.environ.get(NGINX_ENVIRONMENT_VARIABLE, "").strip()
    if configured:
        return configured if Path(configured).is_file() else None
    for candidate in NGINX_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    return None


def nginx_version(nginx: str) -> tuple[int, ...]:
    """The version of an nginx executable, e.g. (1, 22, 1); () when it cannot be read."""
    try:
        reply = subprocess.run([nginx, "-v"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ()
    found = re.search(r"nginx/(\d+(?:\.\d+)*)", reply.stderr + reply.stdout)
    return tuple(int(part) for part in found.group(1).split(".")) if found else ()


def port_is_free(port: int, address: str = "127.0.0.1") -> bool:
    """Whether a TCP port can be bound on `address` right now."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address, port))
        except OSError:
            return False
    return True


def free_port(address: str = "127.0.0.1") -> int:
    """A TCP port that is free right now (the operating system's choice)."""
    with socket.socket() as probe:
        probe.bind((address, 0))
        return probe.getsockname()[1]


def free_consecutive_ports(count: int, address: str = "127.0.0.1") -> int:
    """The first of `count` consecutive free ports (for replicas on any free ports).

    Raises:
        ReplicaError: When none were found after 50 tries.
    """
    for _ in range(50):
        first = free_port(address)
        if first + count <= 65535 and all(
            port_is_free(first + index, address) for index in range(count)
        ):
            return first
    raise ReplicaError(f"Found no {count} consecutive free ports on {address}.")


def check_ports_free(ports: Mapping[str, int], address: str = "127.0.0.1") -> None:
    """Raises a clear error naming every port of `ports` ({what: port}) that is taken."""
    taken = [f"{port} ({what})" for what, port in ports.items() if not port_is_free(port, address)]
    if taken:
        raise ReplicaError(
            f"Port(s) already in use on {address}: {', '.join(taken)}. Stop what uses them or "
            "choose others (--port, --first-port, --ray-port)."
        )


def render_nginx_config(
    folder: Path,
    proxy_port: int,
    upstream_ports: Sequence[int],
    listen: str = "127.0.0.1",
    max_body: str = "200m",
) -> str:
    """The nginx configuration for `upstream_ports` behind `listen:proxy_port`.

    Args:
        folder: Where nginx keeps its pid, logs and temp files.
        proxy_port: The port the browsers use.
        upstream_ports: The Streamlit processes' ports on 127.0.0.1.
        listen: The proxy's address ("0.0.0.0" to serve other machines).
        max_body: nginx's `client_max_body_size` (Streamlit's upload limit is 200 MB).

    Returns:
        The configuration's text (`deploy/nginx.conf.template`, filled in).

    Example:
    >>> text = render_nginx_config(Path("/tmp/x"), 8080, [8501, 8502])
    >>> "server 127.0.0.1:8502" in text
    True
    """
    user_directive = ""
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        # A master started by root switches its workers to "nobody", who could not write the
        # temp folders made here; keep them as the user who started it.
        import grp
        import pwd

        user = pwd.getpwuid(os.geteuid()).pw_name
        group = grp.getgrgid(os.getegid()).gr_name
        user_directive = f"user {user} {group};"
    servers = "\n".join(f"        server 127.0.0.1:{port};" for port in upstream_ports)
    values = {
        "user_directive": user_directive,
        "folder": str(folder),
        "max_body": max_body,
        "cookie_max_age": str(COOKIE_MAX_AGE_SECONDS),
        "upstream_servers": servers,
        "listen": listen,
        "proxy_port": str(proxy_port),
    }

    def fill(match: re.Match) -> str:
        if match.group(1) not in values:
            raise ValueError(f"{TEMPLATE_PATH} names an unknown placeholder {match.group(0)}.")
        return values[match.group(1)]

    return re.sub(r"\{\{(\w+)\}\}", fill, TEMPLATE_PATH.read_text())


def answers_health(url: str, timeout: float = 2) -> bool:
    """Whether `url`/_stcore/health answers "ok"."""
    with (
        contextlib.suppress(OSError),
        urllib.request.urlopen(f"{url}/_stcore/health", timeout=timeout) as reply,
    ):
        return reply.read() == b"ok"
    return False


def tail(path: Path, lines: int = 15) -> str:
    """The last lines of a log file (empty when it cannot be read)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# ----------------------------------------------------------------------------- replicas
class Replicas:
    """A Ray head (optional), N Streamlit replicas and nginx in front, started and stopped together.

    Args:
        replicas: How many `streamlit run serve.py` processes.
        proxy_port: The proxy's port; 0 for any free port.
        first_port: The first replica's port (the others follow); 0 for any free ports.
        runs_dir: The runs folder they share; `$FREEZELAB_RUNS_DIR` or `<repository>/runs`
            when None.
        folder: Where the rendered nginx configuration and every log go; a new temporary
            folder when None (kept after `stop`, for the logs).
        listen: The proxy's address; the replicas always bind 127.0.0.1.
        ray: Also start a Ray head and point the replicas at it (`FREEZELAB_EXECUTOR=ray`).
        ray_port: The Ray head's GCS port.
        ray_cpus: CPUs the Ray head offers (`--num-cpus`); Ray's own count when None.
        environment: Extra environment variables for the replicas.
        python: The Python that runs Streamlit (the one running this, normally the venv's).
        timeout: Seconds to wait for everything to answer.

    Example:
    >>> with Replicas(replicas=2, proxy_port=0, first_port=0) as running:
    ...     urllib.request.urlopen(running.url + "/_stcore/health").headers[REPLICA_HEADER]
    '127.0.0.1:41235'
    """

    def __init__(
        self,
        replicas: int = 2,
        proxy_port: int = 8080,
        first_port: int = 8501,
        runs_dir: str | os.PathLike | None = None,
        folder: str | os.PathLike | None = None,
        listen: str = "127.0.0.1",
        ray: bool = False,
        ray_port: int = 6379,
        ray_cpus: int | None = None,
        environment: Mapping[str, str] | None = None,
        python: str = sys.executable,
        timeout: float = 180,
    ) -> None:
        if replicas < 1:
            raise ValueError(f"`replicas` must be at least 1; received {replicas}.")
        self.replicas = replicas
        self.proxy_port = proxy_port
        self.first_port = first_port
        self.runs_dir = Path(runs_dir).absolute() if runs_dir is not None else None
        self.folder = Path(folder).absolute() if folder is not None else None
        self.listen = listen
        self.ray = ray
        self.ray_port = ray_port
        self.ray_cpus = ray_cpus
        self.environment = dict(environment or {})
        self.python = python
        self.timeout = timeout
        self.ports: list[int] = []
        self._processes: list[tuple[str, subprocess.Popen, Path]] = []
        self._ray_temp: Path | None = None

    # ---------------------------------------------------------------- what callers read
    @property
    def url(self) -> str:
        """The address the browsers use, e.g. "http://127.0.0.1:8080"."""
        host = "127.0.0.1" if self.listen in ("0.0.0.0", "::") else self.listen
        return f"http://{host}:{self.proxy_port}"

    @property
    def replica_urls(self) -> list[str]:
        """Each replica's own address (reachable on this machine only)."""
        return [f"http://127.0.0.1:{port}" for port in self.ports]

    @property
    def access_log(self) -> Path:
        """nginx's access log: request, status, route cookie and upstream of every request."""
        return self._folder / "nginx-access.log"

    @property
    def _folder(self) -> Path:
        if self.folder is None:
            raise ReplicaError("The replicas have not been started yet.")
        return self.folder

    # ------------------------------------------------------------------------ start/stop
    def __enter__(self) -> Replicas:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> Replicas:
        """Starts the Ray head (with `ray=True`), the replicas and nginx; waits until they answer.

        Returns:
            This object (its `url` is the proxy's address).

        Raises:
            ReplicaError: When nginx or Ray is missing, a port is taken, or a process exits or
                does not answer in time; the message names its log. Whatever had started is
                stopped again.
        """
        nginx = find_nginx()
        if nginx is None:
            configured = os.environ.get(NGINX_ENVIRONMENT_VARIABLE, "").strip()
            if configured:
                raise ReplicaError(
                    f"{NGINX_ENVIRONMENT_VARIABLE}={configured!r} is not a file. "
                    + NGINX_INSTALL_HINT
                )
            raise ReplicaError(NGINX_INSTALL_HINT)
        ray_executable = self._ray_executable() if self.ray else None
        if self.folder is None:
            self.folder = Path(tempfile.mkdtemp(prefix="freezelab-replicas-"))
        self.folder.mkdir(parents=True, exist_ok=True)
        self._choose_ports()
        try:
            if ray_executable is not None:
                self._start_ray(ray_executable)
            for port in self.ports:
                self._start_replica(port)
            self._wait_until_healthy(self.replica_urls)
            # nginx last: a replica that refuses a connection is set aside for 10 s.
            self._start_nginx(nginx)
            self._wait_until_healthy([self.url])
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stops everything started, newest first: nginx, the replicas, then the Ray head."""
        while self._processes:
            name, process, _ = self._processes.pop()
            _stop_group(process, name, leader_only=name == RAY_HEAD)
        if self._ray_temp is not None:
            shutil.rmtree(self._ray_temp, ignore_errors=True)
            self._ray_temp = None

    def exited(self) -> list[str]:
        """Descriptions of started processes that have exited by themselves (empty when none)."""
        return [
            f"{name} exited with status {process.returncode}; its log {log}:\n{tail(log)}"
            for name, process, log in self._processes
            if process.poll() is not None
        ]

    # ------------------------------------------------------------------------- internals
    def _choose_ports(self) -> None:
        first = self.first_port or free_consecutive_ports(self.replicas)
        self.ports = [first + index for index in range(self.replicas)]
        if not self.proxy_port:
            self.proxy_port = free_port(self.listen)
        wanted = {f"replica {index + 1}": port for index, port in enumerate(self.ports)}
        if self.ray:
            wanted["Ray head"] = self.ray_port
        check_ports_free(wanted)
        check_ports_free({"proxy": self.proxy_port}, self.listen)

    def _ray_executable(self) -> str:
        candidate = Path(self.python).with_name("ray")
        if candidate.is_file():
            return str(candidate)
        found = shutil.which("ray")
        if found is None:
            raise ReplicaError(RAY_INSTALL_HINT)
        return found

    def _launch(self, name: str, command: list[str], log: Path, **options) -> subprocess.Popen:
        with open(log, "w") as handle:
            process = subprocess.Popen(
                command,
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group, stopped as a whole
                **options,
            )
        self._processes.append((name, process, log))
        return process

    def _start_ray(self, ray_executable: str) -> None:
        # Its own short temp folder (Ray's socket paths must stay under 107 characters), so
        # it never becomes the machine's "current cluster" that a bare `ray.init()` would join.
        self._ray_temp = Path(tempfile.mkdtemp(prefix="flray-", dir="/tmp"))
        command = [
            ray_executable, "start", "--head", "--block",
            "--port", str(self.ray_port),
            "--temp-dir", str(self._ray_temp),
            "--include-dashboard", "false",
            "--disable-usage-stats",
        ]  # fmt: skip
        if self.ray_cpus is not None:
            command += ["--num-cpus", str(self.ray_cpus)]
        log = self._folder / "ray-head.log"
        environment = dict(
            os.environ, **self._ray_environment(), RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0"
        )
        process = self._launch(RAY_HEAD, command, log, env=environment)
        deadline = time.monotonic() + self.timeout
        while port_is_free(self.ray_port):
            if process.poll() is not None:
                raise ReplicaError(f"The Ray head exited early; see {log}:\n{tail(log)}")
            if time.monotonic() > deadline:
                raise ReplicaError(
                    f"The Ray head did not start within {self.timeout:.0f} s; see {log}."
                )
            time.sleep(0.3)

    def _ray_environment(self) -> dict[str, str]:
        """Token authentication with this run's own token, for the head and its clients alike
        (only these variables: they are added to each process's own environment).

        Measured with Ray 2.60: a new head turns token authentication on when
        `~/.ray/auth_token` exists, while a client whose `RAY_AUTH_MODE` is unset connects
        without a token and is refused. An explicit mode and a token file in this run's folder
        make both sides agree, and leave `~/.ray` alone.
        """
        token = self._folder / "ray-auth-token"
        if not token.exists():
            token.touch(mode=0o600)
            token.write_text(secrets.token_hex(32))
        return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}

    def _replica_environment(self) -> dict[str, str]:
        environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
        if self.runs_dir is not None:
            environment["FREEZELAB_RUNS_DIR"] = str(self.runs_dir)
        if self.ray:
            environment.update(self._ray_environment())
            environment["FREEZELAB_EXECUTOR"] = "ray"
            environment["RAY_ADDRESS"] = f"127.0.0.1:{self.ray_port}"
        environment.update(self.environment)
        return environment

    def _start_replica(self, port: int) -> None:
        command = [
            self.python, "-m", "streamlit", "run", "serve.py",
            *STREAMLIT_FLAGS,
            "--server.port", str(port),
        ]  # fmt: skip
        log = self._folder / f"replica-{port}.log"
        self._launch(f"replica :{port}", command, log, cwd=ROOT, env=self._replica_environment())

    def _start_nginx(self, nginx: str) -> None:
        configuration = self._folder / "nginx.conf"
        (self._folder / "temp").mkdir(exist_ok=True)
        configuration.write_text(
            render_nginx_config(self._folder, self.proxy_port, self.ports, self.listen)
        )
        command = [nginx, "-p", str(self._folder), "-c", str(configuration)]
        if nginx_version(nginx) >= (1, 19, 5):  # -e: no attempt at the built-in error log
            command += ["-e", str(self._folder / "nginx-error.log")]
        command += ["-g", "daemon off;"]
        self._launch("nginx", command, self._folder / "nginx.log")

    def _wait_until_healthy(self, urls: Sequence[str]) -> None:
        deadline = time.monotonic() + self.timeout
        waiting = list(urls)
        while waiting:
            failures = self.exited()
            if failures:
                raise ReplicaError("A process exited early. " + "\n".join(failures))
            waiting = [url for url in waiting if not answers_health(url)]
            if not waiting:
                return
            if time.monotonic() > deadline:
                raise ReplicaError(
                    f"No health answer from {', '.join(waiting)} within {self.timeout:.0f} s; "
                    f"see the logs in {self._folder}."
                )
            time.sleep(0.5)


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stop_group(
    process: subprocess.Popen, name: str, grace: float = 15, leader_only: bool = False
) -> None:
    """Sends SIGTERM to a process's group, then SIGKILL to what is left after `grace` seconds.

    The group is the process's own (`start_new_session=True`), so children that outlive it
    (Ray's raylet and workers, nginx's worker) are stopped with it, and nothing else is.

    Args:
        process: The group's leader.
        name: What it is, for the message when it has to be killed.
        grace: Seconds between SIGTERM and SIGKILL.
        leader_only: Send SIGTERM to the leader alone, which stops its children itself
            (`ray start --block` does); SIGKILL still goes to the whole group.
    """
    group = process.pid
    with contextlib.suppress(ProcessLookupError):
        if leader_only:
            process.terminate()
        else:
            os.killpg(group, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if process.poll() is None or _group_alive(group):
            time.sleep(0.1)
            continue
        return
    print(f"{name} did not stop within {grace:.0f} s of SIGTERM; killing it.", file=sys.stderr)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)


# ---------------------------------------------------------------------------- command line
def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line's options (see `--help`)."""
    parser = argparse.ArgumentParser(
        description="FreezeLab replicas behind nginx with sticky sessions, on one machine."
    )
    parser.add_argument("--replicas", type=int, default=2, help="Streamlit processes (2)")
    parser.add_argument("--port", type=int, default=8080, help="the proxy's port (8080)")
    parser.add_argument(
        "--listen", default="127.0.0.1", help="the proxy's address (0.0.0.0: other machines)"
    )
    parser.add_argument(
        "--first-port", type=int, default=8501, help="the first replica's port (8501, 8502...)"
    )
    parser.add_argument(
        "--runs-dir",
        default=None,
        help="the shared runs folder ($FREEZELAB_RUNS_DIR, else ./runs)",
    )
    parser.add_argument(
        "--folder", default=None, help="where the nginx configuration and logs go (a temp folder)"
    )
    parser.add_argument("--ray", action="store_true", help="start a Ray head and train on it")
    parser.add_argument("--ray-port", type=int, default=6379, help="the Ray head's port (6379)")
    parser.add_argument("--ray-cpus", type=int, default=None, help="CPUs the Ray head offers")
    parser.add_argument(
        "--timeout", type=float, default=180, help="seconds to wait for everything to answer"
    )
    return parser.parse_args(argv)


def _raise_interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: Sequence[str] | None = None) -> int:
    """Starts the replicas and serves until Ctrl-C or SIGTERM; returns the exit status."""
    arguments = parse_arguments(argv)
    runs_dir = arguments.runs_dir or os.environ.get("FREEZELAB_RUNS_DIR") or ROOT / "runs"
    replicas = Replicas(
        replicas=arguments.replicas,
        proxy_port=arguments.port,
        first_port=arguments.first_port,
        runs_dir=runs_dir,
        folder=arguments.folder,
        listen=arguments.listen,
        ray=arguments.ray,
        ray_port=arguments.ray_port,
        ray_cpus=arguments.ray_cpus,
        timeout=arguments.timeout,
    )
    # Both explicitly: a process started in the background by a script inherits an ignored
    # SIGINT, and Python then never raises KeyboardInterrupt.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, _raise_interrupt)
    try:
        replicas.start()
        print(f"FreezeLab: {replicas.url}", flush=True)
        print(f"  {len(replicas.ports)} replicas: {', '.join(replicas.replica_urls)}")
        print(f"  shared runs folder: {Path(runs_dir).absolute()}")
        if arguments.ray:
            print(f"  Ray head: 127.0.0.1:{arguments.ray_port} (FREEZELAB_EXECUTOR=ray)")
        print(f"  logs and nginx.conf: {replicas.folder}")
        print("Ctrl-C stops everything.", flush=True)
        while True:
            failures = replicas.exited()
            if failures:
                print("Stopping everything: " + "\n".join(failures), file=sys.stderr)
                return 1
            time.sleep(1)
    except ReplicaError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("Stopping...", flush=True)
        return 0
    finally:
        for name in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not cut the stop
            signal.signal(name, signal.SIG_IGN)
        replicas.stop()


if __name__ == "__main__":
    sys.exit(main())
