"""Workshop load test: a room of learners on one real FreezeLab server (issue 12, item 5).

`make loadtest` (or `.venv/bin/python benchmarks/loadtest.py [--quick]`) starts
`streamlit run serve.py` through `tests/browser/harness.py`, with a fresh temporary runs folder
(`FREEZELAB_RUNS_DIR`) and a short orphan grace period (`FREEZELAB_ORPHAN_GRACE_S`, `--grace`),
and drives real sessions as browser contexts of one headless system Chromium (Playwright's
async API; each context is its own URL session):

1. First visit: one page opened the moment the server answers its health check: the time until
   its script finishes, and whether the "warming up" notice showed.
2. A room: `--trainers` sessions press ▶ Train together on the default task (the bundled digits
   with the default settings, but 20 epochs, `--epochs`, so that the room trains for about two
   minutes; the instructor links in `--links`, default half `freeze=base`, half
   `freeze=batch_norm`, so every run has frozen layers to verify), while the other sessions
   click through the tabs and the layer tree. Every click's rerun latency is measured in the
   page itself: from the pointer going down until the app is idle again
   (`data-test-script-state=notRunning`, quiet for 400 ms, after the run's `script_finished`
   message arrived on the websocket); for tree clicks also until the "Trainable params" metric
   shows the new value. Each latency is split into click to run start (the run's first message
   arriving), the run, and its end to the idle page (the browser drawing it).
3. Chaos: `--chaos` new sessions start long runs (1000 epochs); half reload their page mid-run
   (the page must reattach: the attached notice, live progress, and ■ Stop works), half close
   their page; for each closed one, the time from the close until the server saved its run as
   "orphaned" in the runs folder (its training slot is freed when the job ends).
4. Memory: the server's RSS (with its child processes) is sampled every 0.5 s for the whole run
   (peak reported); one extra session uploads a zip of 10,000 28x28 PNG digits and the server's
   RSS increase is measured after a settle, then the same for `--uploads` more sessions (mean).

On a small machine the 30 pages need more CPU than the server: the server runs in its own
session and Chromium's session gets a lower CPU weight (`--browser-nice`, see
`lower_browser_priority`), and the CPU used by the server, the browser and any other program,
and the time the server's threads waited for a CPU, are reported per phase.

It prints a table (every figure with its target and "met" / "missed by ...") and writes
`benchmarks/loadtest.json`. It is a benchmark, never a test: nothing asserts a timing, and a
failing session is counted and reported, never fatal. The server log goes to
`test-artifacts/loadtest-server.log`. The default run takes about 6-10 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import platform
import random
import re
import shlex
import shutil
import statistics
import tempfile
import threading
import time
import zipfile
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from common import REPOSITORY_ROOT

from tests.browser.harness import (
    APP_IDLE,
    CHROMIUM_ARGS,
    find_chromium,
    streamlit_server_process,
)

OUTPUT_PATH = Path(__file__).resolve().with_name("loadtest.json")
SERVER_LOG = REPOSITORY_ROOT / "test-artifacts" / "loadtest-server.log"
TRAIN_TAB = "4 · Train"
# A clicker's round (its page opens on "1 · Model"): the Freeze tab and its tree, then tabs.
CLICKER_TABS = ("3 · Data", "Compare runs", "1 · Model")
TREE_BASE = "transfer_model/feature_extractor"
TREE_CLICKS = (TREE_BASE, f"{TREE_BASE}/conv1", f"{TREE_BASE}/conv1", TREE_BASE)
DEFAULT_LINKS = ("freeze=base", "freeze=batch_norm")
WAITING_TEXT = "Waiting for a free training slot"
ATTACHED_TEXT = "this page is attached"
SESSION_PATTERN = re.compile(r"[?&]session=([A-Za-z0-9_-]+)")
BATCH_PATTERN = re.compile(r"Epoch (\d+)/\d+ · batch (\d+)/")
ENDED_PATTERNS = {
    "orphaned": re.compile(r"Stopped by the server"),
    "finished": re.compile(r"Finished \d+ epoch"),
    "stopped": re.compile(r"Stopped by request"),
    "failed": re.compile(r"[Ff]ailed|Error"),
}
TARGET_RERUN_P95_MS = 500.0
TARGET_UPLOAD_MIB = 150.0
ORPHAN_MARGIN_SECONDS = 5.0
QUIET_MILLISECONDS = 400  # idle this long after a rerun: a second run (st.rerun) would show
NO_RERUN_MILLISECONDS = 15_000  # no run started this long after a click: it caused none
ACTION_TIMEOUT_MS = 60_000
OPEN_TIMEOUT_MS = 180_000
MEBIBYTE = 1024 * 1024

# Installed in every page of a measured context (top frame only). It timestamps, in the page's
# own clock: the pointer going down; the script runs' messages on Streamlit's websocket (a run
# starts with a `new_session` ForwardMsg, field 4, and ends with `script_finished`, field 6,
# value 0 = finished successfully, 2 = stopped early for a rerun that follows); the app's idle
# state (`data-test-script-state`) once the run's end has arrived; and the first change of the
# server's "Trainable params" metric and of the tree's own, browser-side totals. React may
# batch "running" and "not running" into one render, so the websocket, not the attribute alone,
# says that a rerun happened and when it ended.
PROBE_SCRIPT = """
(() => {
  if (window.top !== window || window.__flProbe) return;
  const probe = {armed: false, watchTotals: false, clickAt: null, busyAt: null, startAt: null,
                 finishedAt: null, idleAt: null, totalsAt: null, totalsBefore: null,
                 treeAt: null, treeBefore: null, warmingAt: null, watchWarming: WATCH_WARMING};
  window.__flProbe = probe;
  const now = () => performance.timeOrigin + performance.now();
  const scriptState = () => {
    const app = document.querySelector('[data-testid=stApp]');
    return app ? app.getAttribute('data-test-script-state') : null;
  };
  const totalsText = () => {
    for (const metric of document.querySelectorAll('[data-testid=stMetric]')) {
      if (metric.textContent.includes('Trainable params')) {
        const value = metric.querySelector('[data-testid=stMetricValue]');
        return value ? value.textContent : null;
      }
    }
    return null;
  };
  // The tree is a components-v2 widget: it lives in a shadow root, which the page's
  // MutationObserver does not see into; it is found (and observed) when a click is armed.
  const findTreeSummary = () => {
    for (const element of document.querySelectorAll('*')) {
      const found = element.shadowRoot && element.shadowRoot.querySelector('.fl-summary');
      if (found) return found;
    }
    return null;
  };
  const treeText = () => {
    const summary = probe.treeRoot && probe.treeRoot.querySelector('.fl-summary');
    return summary ? summary.getAttribute('data-trainable') : null;
  };
  const watchTree = () => {
    const summary = findTreeSummary();
    probe.treeRoot = summary ? summary.getRootNode() : null;
    if (probe.treeRoot && probe.treeRoot !== probe.observedTreeRoot) {
      probe.observedTreeRoot = probe.treeRoot;
      new MutationObserver(check).observe(probe.treeRoot, {
        subtree: true, childList: true, attributes: true, attributeFilter: ['data-trainable'],
      });
    }
  };
  probe.totalsAgree = () => {
    const summary = findTreeSummary(), totals = totalsText();
    if (!summary || totals === null) return null;
    return Number(totals.replace(/[^0-9]/g, '')) === Number(summary.dataset.trainable);
  };
  const check = () => {
    const at = now();
    if (probe.watchWarming && probe.warmingAt === null && document.body
        && document.body.textContent.includes('warming up')) probe.warmingAt = at;
    if (!probe.armed || probe.clickAt === null) return;
    const state = scriptState();
    if (state !== 'notRunning' && probe.busyAt === null) probe.busyAt = at;
    if (probe.finishedAt !== null && probe.idleAt === null && state === 'notRunning')
      probe.idleAt = at;
    if (probe.watchTotals) {
      const totals = totalsText();
      if (probe.totalsAt === null && totals !== null && totals !== probe.totalsBefore)
        probe.totalsAt = at;
      const tree = treeText();
      if (probe.treeAt === null && tree !== null && tree !== probe.treeBefore) probe.treeAt = at;
    }
  };
  const readVarint = (bytes, position) => {
    let value = 0, shift = 0, byte = 0;
    do {
      byte = bytes[position.at++];
      value += (byte & 0x7f) * 2 ** shift;
      shift += 7;
    } while (byte & 0x80 && position.at < bytes.length);
    return value;
  };
  const topLevelFields = (bytes) => {
    const fields = {}, position = {at: 0};
    while (position.at < bytes.length) {
      const tag = readVarint(bytes, position), number = Math.floor(tag / 8), type = tag & 7;
      if (type === 0) fields[number] = readVarint(bytes, position);
      else if (type === 2) { const length = readVarint(bytes, position); position.at += length;
                             fields[number] = -1; }
      else if (type === 1) position.at += 8;
      else if (type === 5) position.at += 4;
      else break;
    }
    return fields;
  };
  const decoder = new TextDecoder();
  const onFrame = (data) => {
    if (!(data instanceof ArrayBuffer)) return;
    // The notice as the server sends it: a page too busy to draw it before the page is
    // complete (one batch of messages) would hide it from the DOM, not from the socket.
    if (probe.watchWarming && probe.warmingAt === null
        && decoder.decode(data).includes('warming up')) probe.warmingAt = now();
    if (!probe.armed || probe.clickAt === null) return;
    const at = now(), fields = topLevelFields(new Uint8Array(data));
    if (4 in fields) {
      if (probe.startAt === null) probe.startAt = at;
      probe.finishedAt = null;
      probe.idleAt = null;
    }
    if (fields[6] === 0 && probe.startAt !== null) probe.finishedAt = at;
    setTimeout(check, 0);
  };
  const NativeWebSocket = window.WebSocket;
  window.WebSocket = class extends NativeWebSocket {
    constructor(...args) {
      super(...args);
      this.addEventListener('message', (event) => onFrame(event.data));
    }
  };
  probe.arm = (watchTotals) => {
    if (watchTotals) watchTree();
    Object.assign(probe, {armed: true, watchTotals, clickAt: null, busyAt: null, startAt: null,
                          finishedAt: null, idleAt: null, totalsAt: null, treeAt: null,
                          totalsBefore: watchTotals ? totalsText() : null,
                          treeBefore: watchTotals ? treeText() : null});
  };
  probe.settled = (quietMs, noRerunMs) => {
    check();
    if (probe.clickAt === null) return false;
    const at = now();
    if (probe.startAt === null && probe.busyAt === null) return at - probe.clickAt > noRerunMs;
    if (probe.idleAt === null || at - probe.idleAt < quietMs) return false;
    // The server's totals come with the rerun; give a late one a little longer.
    return !(probe.watchTotals && probe.totalsAt === null && at - probe.idleAt < 3000);
  };
  // Resolves once settled (true) or after timeoutMs (false), polling inside the page: one
  // round trip per click instead of one every 100 ms through the DevTools protocol.
  probe.whenSettled = (quietMs, noRerunMs, timeoutMs) => new Promise((resolve) => {
    const started = now();
    const tick = () => {
      if (probe.settled(quietMs, noRerunMs)) resolve(true);
      else if (now() - started > timeoutMs) resolve(false);
      else setTimeout(tick, 100);
    };
    tick();
  });
  probe.result = () => ({click: probe.clickAt, start: probe.startAt, finished: probe.finishedAt,
                         idle: probe.idleAt, totals: probe.totalsAt, tree: probe.treeAt});
  window.addEventListener('pointerdown', () => {
    if (probe.armed && probe.clickAt === null) probe.clickAt = now();
  }, true);
  const observe = () => new MutationObserver(check).observe(document.documentElement, {
    subtree: true, childList: true, characterData: true, attributes: true,
    attributeFilter: ['data-test-script-state', 'data-trainable'],
  });
  if (document.documentElement) observe();
  else document.addEventListener('DOMContentLoaded', observe);
})();
"""


# ------------------------------------------------------------------------------ options
@dataclass
class Options:
    """What one load test does.

    Attributes:
        sessions: Sessions of the room (trainers + clickers).
        trainers: How many of them train; the others click.
        chaos: Sessions of the chaos round (half reload, half close their page).
        grace: The server's orphan grace period in seconds (FREEZELAB_ORPHAN_GRACE_S).
        epochs: Epochs of the room's runs (None: the app's default, 3). The bundled digits
            train 3 epochs in about 2 s, so 10 such runs are over in ~25 s; 20 epochs keep
            the room training for about 2 minutes, long enough to measure the clickers.
        chaos_epochs: Epochs of the chaos round's long runs.
        links: Instructor-link query strings cycled over the training sessions ("" = none).
        think_seconds: Mean pause of a clicker between two actions (uniform, +-50%).
        uploads: Extra sessions that each upload the 10k-image zip after the first one.
        open_concurrency: How many pages open at the same time.
        room_timeout: Seconds the room phase may last at most.
        output: Where the JSON report goes.
        keep_runs: Keep the temporary runs folder (its path is reported).
        browser_nice: CPU priority decrease of Chromium (its session's autogroup nice and
            its threads' nice), so that the pages do not starve the server being measured on
            a small machine (see `lower_browser_priority`).
    """

    sessions: int = 30
    trainers: int = 10
    chaos: int = 10
    grace: float = 20.0
    epochs: int | None = 20
    chaos_epochs: int = 1000
    links: tuple[str, ...] = DEFAULT_LINKS
    think_seconds: float = 2.0
    uploads: int = 3
    open_concurrency: int = 6
    room_timeout: float = 300.0
    output: Path = OUTPUT_PATH
    keep_runs: bool = False
    browser_nice: int = 10


def parse_options(argv: list[str] | None = None) -> Options:
    """Reads the command line.

    Args:
        argv: Arguments without the program name; `sys.argv[1:]` when None.

    Returns:
        The `Options`; `--quick` gives a small smoke run (6 sessions, 2 trainers, 2 chaos
        pages, one upload) unless the sizes are also given.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, help="sessions of the room (default 30)")
    parser.add_argument("--trainers", type=int, help="of which train (default 10)")
    parser.add_argument("--chaos", type=int, help="chaos-round sessions (default 10)")
    parser.add_argument("--grace", type=float, default=20.0, help="orphan grace, s (20)")
    parser.add_argument(
        "--epochs", type=int, default=20, help="epochs of the room's runs (20; 0: app default 3)"
    )
    parser.add_argument("--chaos-epochs", type=int, default=1000, help="(1000)")
    parser.add_argument(
        "--links",
        default=",".join(DEFAULT_LINKS),
        help="instructor-link query strings cycled over trainers, comma-separated; '' for none",
    )
    parser.add_argument("--think", type=float, default=2.0, help="clicker pause, mean s (2)")
    parser.add_argument("--uploads", type=int, help="extra upload sessions (default 3)")
    parser.add_argument("--room-timeout", type=float, default=300.0)
    parser.add_argument("--output", type=Path, default=OUTPUT_PATH)
    parser.add_argument("--keep-runs", action="store_true", help="keep the runs folder")
    parser.add_argument(
        "--browser-nice", type=int, default=10, help="Chromium's (autogroup) nice (10; 0 = none)"
    )
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    arguments = parser.parse_args(argv)
    small = arguments.quick

    def size(given: int | None, quick: int, default: int) -> int:
        """The size given on the command line, else the quick run's or the default one."""
        return given if given is not None else quick if small else default

    return Options(
        sessions=size(arguments.sessions, 6, 30),
        trainers=size(arguments.trainers, 2, 10),
        chaos=size(arguments.chaos, 2, 10),
        grace=arguments.grace,
        epochs=arguments.epochs or None,
        chaos_epochs=arguments.chaos_epochs,
        links=tuple(arguments.links.split(",")) if arguments.links else ("",),
        think_seconds=arguments.think,
        uploads=size(arguments.uploads, 0, 3),
        room_timeout=arguments.room_timeout,
        output=arguments.output,
        keep_runs=arguments.keep_runs,
        browser_nice=arguments.browser_nice,
    )


# ----------------------------------------------------------------- server process numbers
def child_processes() -> dict[int, list[int]]:
    """Returns every live process's children, from one scan of /proc (Linux).

    Returns:
        Parent id -> its children's ids.
    """
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = (entry / "stat").read_text()
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry.name))
    return children


def descendants(children: dict[int, list[int]], root: int) -> list[int]:
    """Returns `root` and all its descendants.

    Args:
        children: `child_processes()`.
        root: A process id.

    Returns:
        The ids, `root` first.
    """
    found, pending = [], [root]
    while pending:
        current = pending.pop()
        found.append(current)
        pending.extend(children.get(current, []))
    return found


def rss_bytes(pids: list[int]) -> int:
    """Returns the summed resident memory (VmRSS) of processes.

    Args:
        pids: Process ids; vanished ones count 0.

    Returns:
        Bytes.
    """
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total


def runqueue_wait_seconds(pid: int) -> dict[int, float]:
    """Returns, for each thread of a process, the seconds it has waited for a CPU while
    runnable (Linux schedstat; empty when unavailable).

    Args:
        pid: A process id.

    Returns:
        Thread id -> seconds spent runnable but not running.
    """
    waits: dict[int, float] = {}
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError, IndexError, ValueError):
                waits[int(task.name)] = int((task / "schedstat").read_text().split()[1]) / 1e9
    return waits


def cpu_seconds(pid: int) -> float | None:
    """Returns the CPU time (user + system, all threads) a process used so far.

    Args:
        pid: A process id.

    Returns:
        Seconds of CPU; None when the process is gone.
    """
    with contextlib.suppress(OSError, IndexError, ValueError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return None


class ProcessSampler:
    """Samples, every `interval` seconds in a thread, the server's RSS (its process tree) and
    the CPU time of three groups: the server, the browser (everything this process started
    but the server: Playwright's driver and Chromium) and this client process.

    A process's last CPU reading is kept after it exits (a closed browser context's renderer),
    so a group's CPU time never goes down.

    Attributes:
        samples: `(monotonic time, server RSS bytes)` pairs, oldest first.
    """

    def __init__(self, server_pid: int, interval: float = 0.5) -> None:
        """Starts nothing yet.

        Args:
            server_pid: The server's process id.
            interval: Seconds between samples.
        """
        self.server_pid = server_pid
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._cpu: dict[int, tuple[str, float]] = {}
        self._kinds: dict[int, str] = {}
        self._waits: dict[int, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="process-sampler", daemon=True)

    def sample(self) -> None:
        """Takes one sample now (the thread takes one every `interval`)."""
        children = child_processes()
        server = descendants(children, self.server_pid)
        client = os.getpid()
        browser = [pid for pid in descendants(children, client)[1:] if pid not in server]
        groups = [("server", pid) for pid in server]
        groups += [(f"browser {self._kind(pid)}", pid) for pid in browser]
        readings = [(group, pid, cpu_seconds(pid)) for group, pid in [*groups, ("client", client)]]
        rss = rss_bytes(server)
        waits = [runqueue_wait_seconds(pid) for pid in server]
        with self._lock:
            self.samples.append((time.monotonic(), rss))
            for group, pid, seconds in readings:
                if seconds is not None:
                    self._cpu[pid] = (group, seconds)
            for threads in waits:
                self._waits.update(threads)

    def _kind(self, pid: int) -> str:
        """A browser process's kind: Chromium's `--type` (renderer, gpu-process...), "main"
        for the browser process itself, or the program's name (Playwright's node driver)."""
        if pid not in self._kinds:
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                return "gone"
            found = re.search(r"--type=([a-z-]+)", command)
            program = command.split(" ", 1)[0].rsplit("/", 1)[-1]
            self._kinds[pid] = (
                found.group(1) if found else "main" if "chrom" in program else program
            )
        return self._kinds[pid]

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def start(self) -> None:
        """Starts sampling."""
        self._thread.start()

    def stop(self) -> None:
        """Stops sampling and waits for the thread."""
        self._stop.set()
        self._thread.join(timeout=5)

    def peak(self) -> int:
        """Returns the largest RSS sample in bytes (0 before any)."""
        with self._lock:
            return max((value for _, value in self.samples), default=0)

    def cpu(self) -> dict[str, float]:
        """Returns the CPU seconds each group used so far: "server", "browser" (all of it),
        "browser <kind>" (per kind of process) and "client"."""
        totals = {"server": 0.0, "browser": 0.0, "client": 0.0}
        with self._lock:
            for group, seconds in self._cpu.values():
                totals[group] = totals.get(group, 0.0) + seconds
                if group.startswith("browser "):
                    totals["browser"] += seconds
            totals["server waiting for a CPU"] = sum(self._waits.values())
        return totals

    async def settled(self, seconds: float = 2.0) -> int:
        """Waits `seconds` and returns the median server RSS sampled during them.

        Args:
            seconds: The window; at least a few samples long.

        Returns:
            Bytes.
        """
        started = time.monotonic()
        await asyncio.sleep(seconds)
        with self._lock:
            window = [value for at, value in self.samples if at >= started]
        return int(statistics.median(window)) if window else rss_bytes([self.server_pid])


def machine_cpu_seconds() -> tuple[float, float]:
    """Returns the whole machine's busy CPU seconds so far (all cores, every process) and
    the seconds some task waited for a CPU (Linux pressure stall information, 0 without it)."""
    busy = 0.0
    with contextlib.suppress(OSError, ValueError):
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        busy = (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")
    waited = 0.0
    with contextlib.suppress(OSError, ValueError, IndexError):
        some = Path("/proc/pressure/cpu").read_text().splitlines()[0]
        waited = int(some.rsplit("total=", 1)[1]) / 1e6
    return busy, waited


def machine_busy_percent(seconds: float = 3.0) -> float:
    """How busy the machine's CPUs are now, over `seconds` (100% = one core busy)."""
    before, _ = machine_cpu_seconds()
    time.sleep(seconds)
    after, _ = machine_cpu_seconds()
    return 100 * (after - before) / seconds


@dataclass
class CpuMeter:
    """The CPU used by the server, the browser and this client during each phase.

    Attributes:
        sampler: The running `ProcessSampler`.
        phases: Phase name -> {"seconds", "<group>_cpu_percent" for each group}, where 100%
            is one core busy for the whole phase.
    """

    sampler: ProcessSampler
    phases: dict[str, dict[str, float]] = field(default_factory=dict)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Measures the CPU each group used during the block.

        Args:
            name: The phase's name in the report.
        """
        self.sampler.sample()
        started, before = time.monotonic(), self.sampler.cpu()
        machine_before, waited_before = machine_cpu_seconds()
        try:
            yield
        finally:
            self.sampler.sample()  # a reading at the very end of the phase
            wall = max(time.monotonic() - started, 1e-9)
            after = self.sampler.cpu()
            machine_after, waited_after = machine_cpu_seconds()
            used = {group: after[group] - before.get(group, 0.0) for group in after}
            ours = used["server"] + used["browser"] + used["client"]
            # Summed over its threads: 100% = one of its threads runnable but not running.
            used["other processes"] = max(0.0, machine_after - machine_before - ours)
            self.phases[name] = {"seconds": round(wall, 1)} | {
                f"{group}_cpu_percent": round(100 * value / wall) for group, value in used.items()
            }
            self.phases[name]["cpu_pressure_percent"] = round(
                100 * (waited_after - waited_before) / wall
            )


# --------------------------------------------------------------------------- the upload
def digits_zip(count: int = 10_000, size: int = 28, seed: int = 0) -> bytes:
    """Builds, in memory, a zip of `count` grayscale PNG digits in ten class folders.

    Each image is a digit drawn in Pillow's default font at a random place and size on a black
    square, with a little noise: MNIST-like files of a few hundred bytes.

    Args:
        count: Number of images, spread evenly over the classes 0-9.
        size: Side of each image in pixels.
        seed: Random seed (the same zip every time).

    Returns:
        The zip's bytes.
    """
    from PIL import Image, ImageDraw, ImageFont

    generator = random.Random(seed)
    fonts = []
    for font_size in (14, 17, 20):
        try:
            fonts.append(ImageFont.load_default(size=font_size))
        except TypeError:  # Pillow < 10.1 has one bitmap font
            fonts.append(ImageFont.load_default())
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for index in range(count):
            label = index % 10
            image = Image.new("L", (size, size), 0)
            draw = ImageDraw.Draw(image)
            draw.text(
                (generator.randint(3, 12), generator.randint(0, 6)),
                str(label),
                fill=generator.randint(180, 255),
                font=generator.choice(fonts),
            )
            for _ in range(6):
                draw.point((generator.randrange(size), generator.randrange(size)), fill=60)
            encoded = io.BytesIO()
            image.save(encoded, format="PNG")
            archive.writestr(f"digit_{label}/{index:05d}.png", encoded.getvalue())
    return buffer.getvalue()


# ------------------------------------------------------------------------ the page tools
@dataclass
class Session:
    """One browser context and page: a URL session of the app.

    Attributes:
        role: "first", "trainer", "clicker", "reloader", "closer" or "upload".
        index: Number within its role.
        page: The Playwright page (None when it could not be opened).
        session_id: The `session` id the server put in the URL.
        open_seconds: From `goto` until the first script run finished.
        errors: What went wrong with this session (counted, never fatal).
    """

    role: str
    index: int
    page: Any = None
    session_id: str | None = None
    open_seconds: float | None = None
    errors: list[str] = field(default_factory=list)

    def fail(self, where: str, error: BaseException) -> None:
        """Records a failure of this session.

        Args:
            where: What it was doing.
            error: The exception.
        """
        text = str(error).strip().splitlines()[0] if str(error).strip() else ""
        self.errors.append(f"{where}: {type(error).__name__}: {text}"[:300])


async def wait_idle(page: Any, timeout_ms: float = ACTION_TIMEOUT_MS) -> None:
    """Waits until Streamlit has finished the page's script run.

    Args:
        page: A Playwright page.
        timeout_ms: Give up after this long.
    """
    await page.wait_for_selector(APP_IDLE, timeout=timeout_ms)


async def open_session(
    browser: Any, address: str, session: Session, watch_warming: bool = False
) -> None:
    """Opens the app in a new browser context (a new URL session) and waits for its script.

    Args:
        browser: The Playwright browser.
        address: The URL to open (with an instructor link's parameters, if any).
        session: Filled in: page, session id and open time.
        watch_warming: Whether the probe records the "warming up" notice.
    """
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    await context.add_init_script(
        PROBE_SCRIPT.replace("WATCH_WARMING", "true" if watch_warming else "false")
    )
    session.page = await context.new_page()
    started = time.monotonic()
    await session.page.goto(address, timeout=OPEN_TIMEOUT_MS)
    await session.page.get_by_role("tab", name="1 · Model").wait_for(timeout=OPEN_TIMEOUT_MS)
    await wait_idle(session.page, OPEN_TIMEOUT_MS)
    session.open_seconds = time.monotonic() - started
    await session.page.wait_for_function(
        "() => /[?&]session=/.test(location.search)", timeout=ACTION_TIMEOUT_MS
    )
    session.session_id = SESSION_PATTERN.search(session.page.url).group(1)


async def open_sessions(
    browser: Any, addresses: list[str], sessions: list[Session], concurrency: int
) -> None:
    """Opens many sessions, `concurrency` at a time; failures are recorded on the session.

    Args:
        browser: The Playwright browser.
        addresses: One URL per session.
        sessions: The sessions to open (same order).
        concurrency: Pages loading at the same time.
    """
    gate = asyncio.Semaphore(concurrency)

    async def one(address: str, session: Session) -> None:
        async with gate:
            try:
                await open_session(browser, address, session)
            except Exception as error:  # one failed session never stops the run
                session.fail("open", error)

    await asyncio.gather(*(one(a, s) for a, s in zip(addresses, sessions, strict=True)))


async def close_session(session: Session) -> None:
    """Closes a session's browser context (ignores one already closed)."""
    if session.page is not None:
        with contextlib.suppress(Exception):
            await session.page.context.close()


async def go_to_tab(page: Any, tab: str) -> None:
    """Clicks a tab and waits for the rerun to end."""
    await page.get_by_role("tab", name=tab).click(timeout=ACTION_TIMEOUT_MS)
    await page.wait_for_timeout(100)
    await wait_idle(page)


async def train_panel_text(page: Any) -> str:
    """Returns the visible text of the Train tab's panel ("" when it is not shown)."""
    panel = page.get_by_role("tabpanel", name=TRAIN_TAB)
    try:
        return await panel.inner_text(timeout=5_000)
    except Exception:  # between two reruns the panel may be absent a moment
        return ""


# ------------------------------------------------------------------------ measured clicks
@dataclass
class ClickSample:
    """One measured click of a clicker.

    Attributes:
        kind: "tab" or "tree".
        target: The tab's name or the tree path.
        at: When it was clicked (monotonic seconds, for the phase it fell in).
        rerun_ms: Pointer down to idle again; None when no rerun came.
        totals_ms: Pointer down to the server's new "Trainable params" (tree clicks).
        tree_totals_ms: Pointer down to the tree's own, browser-side totals (tree clicks).
        totals_agree: After the rerun, whether the browser-side and server totals agree.
        to_server_start_ms: Pointer down to the run's first message (`new_session`) arriving.
        script_ms: That message to the run's `script_finished` arriving.
        finish_to_idle_ms: `script_finished` arriving to the page showing idle (rendering).
    """

    kind: str
    target: str
    at: float
    rerun_ms: float | None = None
    to_server_start_ms: float | None = None
    script_ms: float | None = None
    finish_to_idle_ms: float | None = None
    totals_ms: float | None = None
    tree_totals_ms: float | None = None
    totals_agree: bool | None = None


async def measured_click(page: Any, kind: str, target: str) -> ClickSample:
    """Clicks a tab or a tree checkbox and measures, in the page, until the app is idle again.

    Args:
        page: A clicker's page (with the probe installed).
        kind: "tab" or "tree".
        target: The tab's name, or the tree path whose "freeze" box is clicked.

    Returns:
        The `ClickSample`.
    """
    watch_totals = kind == "tree"
    await page.evaluate("(watch) => window.__flProbe.arm(watch)", watch_totals)
    sample = ClickSample(kind, target, time.monotonic())
    if kind == "tab":
        locator = page.get_by_role("tab", name=target)
    else:
        locator = page.get_by_label(f"freeze {target}", exact=True)
    await locator.click(timeout=ACTION_TIMEOUT_MS)
    settled = await page.evaluate(
        "([quiet, noRerun, timeout]) => window.__flProbe.whenSettled(quiet, noRerun, timeout)",
        [QUIET_MILLISECONDS, NO_RERUN_MILLISECONDS, ACTION_TIMEOUT_MS],
    )
    if not settled:
        raise TimeoutError(f"the app was not idle {ACTION_TIMEOUT_MS / 1000:.0f} s after the click")
    times = await page.evaluate("() => window.__flProbe.result()")
    click = times["click"]
    if times["idle"] is not None:
        sample.rerun_ms = times["idle"] - click
        sample.finish_to_idle_ms = times["idle"] - times["finished"]
    if times["start"] is not None:
        sample.to_server_start_ms = times["start"] - click
        if times["finished"] is not None:
            sample.script_ms = times["finished"] - times["start"]
    if watch_totals:
        sample.totals_ms = None if times["totals"] is None else times["totals"] - click
        sample.tree_totals_ms = None if times["tree"] is None else times["tree"] - click
        sample.totals_agree = await totals_agree(page)
    return sample


async def totals_agree(page: Any) -> bool | None:
    """Whether the tree's browser-side trainable total equals the server's metric.

    Args:
        page: A page on the Freeze tab.

    Returns:
        True or False; None when either number is not on the page.
    """
    return await page.evaluate("() => window.__flProbe.totalsAgree()")


async def clicker(
    session: Session, start: asyncio.Event, stop: asyncio.Event, think_seconds: float
) -> list[ClickSample]:
    """A learner clicking around: tabs in turn, and on the Freeze tab the layer tree.

    Args:
        session: An open clicker session.
        start: Set when the room presses Train.
        stop: Set when every trainer's run has ended.
        think_seconds: Mean pause between two actions.

    Returns:
        Every measured click (failures are recorded on the session).
    """
    generator = random.Random(session.index)
    samples: list[ClickSample] = []
    page = session.page
    await start.wait()
    await asyncio.sleep(generator.uniform(0, think_seconds))  # people do not click in step
    round_number = 0
    while not stop.is_set() and len(session.errors) < 5:
        actions = [("tab", "2 · Freeze")] + [("tree", path) for path in TREE_CLICKS]
        actions += [("tab", tab) for tab in CLICKER_TABS]
        for kind, target in actions:
            if stop.is_set():
                break
            try:
                samples.append(await measured_click(page, kind, target))
            except Exception as error:  # counted, the clicker goes on
                session.fail(f"click {target} (round {round_number})", error)
                with contextlib.suppress(Exception):
                    await wait_idle(page, 10_000)
            await asyncio.sleep(generator.uniform(0.5, 1.5) * think_seconds)
        round_number += 1
    return samples


# ---------------------------------------------------------------------------- trainers
@dataclass
class RunRecord:
    """One run a session started, as the page and the runs folder saw it.

    Attributes:
        role: "trainer", "reloader" or "closer".
        session_id: The session's id (its runs folder).
        started: Whether the page showed the run after ▶ Train.
        slot_wait_s: ▶ Train to the first view of the run no longer waiting for a slot.
        first_batch_s: ▶ Train to the first view with a batch done.
        page_ending: How the page said it ended ("finished", "stopped", "failed"), if seen.
        end_s: ▶ Train to the page showing the end.
        file_ending: The saved run's "ending"; None while no file is there.
        verified: The saved run's `verification.all_unchanged`.
        checked_layers: How many frozen layers its proof checked.
        saved_after_close_s: For a closed page: close to the saved "orphaned" run.
        state_at_close: For a closed page: "running" or "waiting" when it was closed.
        reattached: For a reloaded page: the attached notice showed and the run was live.
        progress_moved: For the reloaded page whose run trained: its progress moved on.
        stop_worked: For a reloaded page: ■ Stop led to "Stopped by request".
        trained_seconds: The saved run's training time (a closed page's run that trained while
            its page was gone: it held the training slot).
        timeline: What the Train panel said, each time it changed: (seconds after ▶ Train,
            its progress line or message).
    """

    role: str
    session_id: str | None
    started: bool = False
    slot_wait_s: float | None = None
    first_batch_s: float | None = None
    page_ending: str | None = None
    end_s: float | None = None
    file_ending: str | None = None
    verified: bool | None = None
    checked_layers: int | None = None
    saved_after_close_s: float | None = None
    state_at_close: str | None = None
    reattached: bool | None = None
    progress_moved: bool | None = None
    stop_worked: bool | None = None
    trained_seconds: float | None = None
    timeline: list[tuple[float, str]] = field(default_factory=list)


def page_ending(text: str) -> str | None:
    """How the Train panel says the run ended, or None while it runs."""
    for ending, pattern in ENDED_PATTERNS.items():
        if pattern.search(text):
            return ending
    return None


def has_trained_a_batch(text: str) -> bool:
    """Whether the progress text shows a batch done ("Epoch 1/3 · batch 5/90") or an end."""
    match = BATCH_PATTERN.search(text)
    if match:
        return int(match.group(1)) > 1 or int(match.group(2)) > 0
    return page_ending(text) is not None


async def press_train(session: Session) -> float:
    """Presses ▶ Train and returns when (monotonic seconds)."""
    clicked = time.monotonic()
    await session.page.get_by_role("button", name="▶ Train").click(timeout=ACTION_TIMEOUT_MS)
    return clicked


def note_progress(record: RunRecord, text: str, since: float) -> None:
    """Updates a run's queue and first-batch times from one view of its Train panel.

    Args:
        record: The run.
        text: The Train panel's text.
        since: When ▶ Train was pressed (monotonic seconds).
    """
    elapsed = time.monotonic() - since
    line = next(
        (
            part
            for part in text.splitlines()
            if re.search(r"Epoch \d|Waiting|Stopped|Finished", part)
        ),
        text.strip().splitlines()[0] if text.strip() else "(no panel)",
    )
    line = re.sub(r" · elapsed .*", "", line)[:90] + (" (waiting)" if WAITING_TEXT in text else "")
    if not record.timeline or record.timeline[-1][1] != line:
        record.timeline.append((round(elapsed, 1), line))
    if "Epoch " not in text:
        return
    record.started = True
    if record.slot_wait_s is None and WAITING_TEXT not in text:
        record.slot_wait_s = elapsed
    if record.first_batch_s is None and has_trained_a_batch(text):
        record.first_batch_s = elapsed


async def trainer(session: Session, start: asyncio.Event, deadline: float) -> RunRecord:
    """A learner pressing ▶ Train with the room and watching the run to its end.

    Args:
        session: An open trainer session (already on the Train tab).
        start: Set when the room presses Train.
        deadline: Monotonic time after which it stops watching.

    Returns:
        The run's `RunRecord` (file fields are filled in later).
    """
    record = RunRecord("trainer", session.session_id)
    await start.wait()
    try:
        clicked = await press_train(session)
        while time.monotonic() < deadline:
            text = await train_panel_text(session.page)
            note_progress(record, text, clicked)
            ending = page_ending(text) if record.started else None
            if ending is not None:
                record.page_ending, record.end_s = ending, time.monotonic() - clicked
                break
            await asyncio.sleep(1.0)
        else:
            session.errors.append("train: the run did not end before the room's deadline")
    except Exception as error:  # counted, never fatal
        session.fail("train", error)
    return record


# ------------------------------------------------------------------------ runs on disk
def read_saved_run(runs_folder: Path, record: RunRecord) -> None:
    """Fills a run's file fields from the first run the server saved for its session.

    Args:
        runs_folder: The server's FREEZELAB_RUNS_DIR.
        record: The run (its session's first run is run-000001.json).
    """
    if record.session_id is None:
        return
    path = runs_folder / record.session_id / "run-000001.json"
    with contextlib.suppress(OSError, ValueError):
        stored = json.loads(path.read_text(encoding="utf-8"))
        record.file_ending = stored.get("ending")
        verification = stored.get("verification") or {}
        record.verified = verification.get("all_unchanged")
        record.checked_layers = verification.get("num_checked")
        record.trained_seconds = stored.get("elapsed_seconds")


async def wait_for_saved_runs(runs_folder: Path, records: list[RunRecord], timeout: float) -> None:
    """Waits until every started run has a saved file (or `timeout` passed), then reads them.

    Args:
        runs_folder: The server's FREEZELAB_RUNS_DIR.
        records: The runs.
        timeout: Seconds to wait at most.
    """
    deadline = time.monotonic() + timeout
    while True:
        for record in records:
            read_saved_run(runs_folder, record)
        missing = [r for r in records if r.started and r.file_ending is None]
        if not missing or time.monotonic() > deadline:
            return
        await asyncio.sleep(0.5)


# ------------------------------------------------------------------------------ phases
@dataclass
class Results:
    """Everything measured, for the report.

    Attributes:
        first_visit: The first visit's times and whether the notice showed.
        open_seconds: Each room and chaos page's open time.
        clicks: Every clicker sample during the room phase.
        runs: Every run of the room and of the chaos round.
        uploads: Each upload session's RSS before/after and timings.
        sessions: Every session, for its errors.
        cpu: The CPU meter's phases.
        peak_rss: The server's peak RSS in bytes.
        room_seconds: From ▶ Train to the last run's end.
        slots: The server's training slots (FREEZELAB_TRAINING_SLOTS or one per two cores).
        priorities: How the browser's CPU priority was lowered, in words.
    """

    first_visit: dict[str, Any] = field(default_factory=dict)
    open_seconds: list[float] = field(default_factory=list)
    clicks: list[ClickSample] = field(default_factory=list)
    runs: list[RunRecord] = field(default_factory=list)
    uploads: list[dict[str, Any]] = field(default_factory=list)
    sessions: list[Session] = field(default_factory=list)
    cpu: dict[str, dict[str, float]] = field(default_factory=dict)
    peak_rss: int = 0
    room_seconds: float | None = None
    slots: int | None = None
    priorities: str = ""


async def first_visit(browser: Any, url: str, healthy_at: float, results: Results) -> None:
    """Opens one page the moment the server is healthy; times it and watches for the notice.

    Args:
        browser: The Playwright browser (launched before the server).
        url: The app's URL.
        healthy_at: When the server answered its health check (monotonic seconds).
        results: Where the figures go.
    """
    session = Session("first", 0)
    results.sessions.append(session)
    wall_at_health = time.time() - (time.monotonic() - healthy_at)
    try:
        await open_session(browser, url, session, watch_warming=True)
        done = time.monotonic()
        warming_at = await session.page.evaluate("() => window.__flProbe.warmingAt")
        results.first_visit = {
            "health_to_script_done_s": round(done - healthy_at, 2),
            "warming_notice_shown": warming_at is not None,
            "health_to_warming_notice_s": None
            if warming_at is None
            else round(warming_at / 1000 - wall_at_health, 2),
        }
    except Exception as error:
        session.fail("first visit", error)
    await close_session(session)


async def prepare_trainers(sessions: list[Session]) -> None:
    """Puts each open trainer page on the Train tab (failures recorded on the session)."""

    async def one(session: Session) -> None:
        try:
            await go_to_tab(session.page, TRAIN_TAB)
        except Exception as error:
            session.fail("train tab", error)

    await asyncio.gather(*(one(s) for s in sessions if s.page is not None and not s.errors))


def link_address(url: str, link: str, epochs: int | None) -> str:
    """The URL a learner opens: the app with an instructor link's parameters.

    Args:
        url: The app's URL.
        link: A query string such as "freeze=base" ("" for none).
        epochs: An `epochs` parameter to add, or None.

    Returns:
        The address.
    """
    parts = [part for part in (link, f"epochs={epochs}" if epochs else "") if part]
    return f"{url}/?{'&'.join(parts)}" if parts else url


async def room(
    browser: Any, url: str, runs_folder: Path, options: Options, results: Results
) -> None:
    """The room: trainers press ▶ Train together while the clickers click through the app.

    Args:
        browser: The Playwright browser.
        url: The app's URL.
        runs_folder: The server's FREEZELAB_RUNS_DIR.
        options: Sizes and settings.
        results: Where the figures go.
    """
    trainers = [Session("trainer", i) for i in range(options.trainers)]
    clickers = [Session("clicker", i) for i in range(options.sessions - options.trainers)]
    results.sessions.extend(trainers + clickers)
    addresses = [
        link_address(url, options.links[i % len(options.links)], options.epochs)
        for i in range(len(trainers))
    ] + [url] * len(clickers)
    print(f"Opening {len(addresses)} sessions...", flush=True)
    await open_sessions(browser, addresses, trainers + clickers, options.open_concurrency)
    results.open_seconds.extend(s.open_seconds for s in trainers + clickers if s.open_seconds)
    await prepare_trainers(trainers)
    ready_trainers = [s for s in trainers if s.page is not None and not s.errors]
    ready_clickers = [s for s in clickers if s.page is not None and not s.errors]
    print(
        f"Room: {len(ready_trainers)} trainers press ▶ Train, {len(ready_clickers)} click...",
        flush=True,
    )
    start, stop = asyncio.Event(), asyncio.Event()
    deadline = time.monotonic() + options.room_timeout
    clicking = [
        asyncio.create_task(clicker(s, start, stop, options.think_seconds)) for s in ready_clickers
    ]
    training = [asyncio.create_task(trainer(s, start, deadline)) for s in ready_trainers]
    started = time.monotonic()
    start.set()
    records = await asyncio.gather(*training)
    results.runs.extend(records)
    results.room_seconds = time.monotonic() - started
    stop.set()
    for samples in await asyncio.gather(*clicking):
        results.clicks.extend(samples)
    await asyncio.gather(*(close_session(s) for s in trainers + clickers))
    await wait_for_saved_runs(runs_folder, list(records), timeout=30)


async def start_chaos_run(session: Session, record: RunRecord) -> None:
    """Presses ▶ Train in a chaos page and waits until the page shows its run.

    Args:
        session: An open chaos session.
        record: Its run, filled in (`started` once the page shows it).
    """
    try:
        await go_to_tab(session.page, TRAIN_TAB)
        clicked = await press_train(session)
        deadline = time.monotonic() + OPEN_TIMEOUT_MS / 1000
        while not record.started and time.monotonic() < deadline:
            note_progress(record, await train_panel_text(session.page), clicked)
            await asyncio.sleep(0.5)
        if not record.started:
            session.errors.append("chaos: the run never showed on the page")
    except Exception as error:  # counted, never fatal
        session.fail("chaos start", error)


async def start_chaos_runs(sessions: list[Session], records: list[RunRecord]) -> None:
    """Starts the chaos runs: the first two pages in turn (so the first closer's run takes
    the slot and the first reloader's is next in the queue), then the others together.

    Args:
        sessions: The open chaos sessions, reloaders and closers interleaved.
        records: One `RunRecord` per session (same order), filled in.
    """
    pairs = list(zip(sessions, records, strict=True))
    for session, record in pairs[:2]:
        await start_chaos_run(session, record)
    await asyncio.gather(*(start_chaos_run(s, r) for s, r in pairs[2:]))


async def wait_until_training(session: Session, timeout: float = 120) -> None:
    """Waits until a page's run trains batches (it holds the training slot)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = await train_panel_text(session.page)
        if WAITING_TEXT not in text and BATCH_PATTERN.search(text) and has_trained_a_batch(text):
            return
        await asyncio.sleep(0.5)


async def close_page(session: Session, record: RunRecord, runs_folder: Path) -> None:
    """Closes a page mid-run and times how long until the server saved its run as orphaned.

    Args:
        session: A chaos session whose run started.
        record: Its run, filled in.
        runs_folder: The server's FREEZELAB_RUNS_DIR.
    """
    text = await train_panel_text(session.page)
    record.state_at_close = (
        "waiting"
        if WAITING_TEXT in text
        else "running"
        if BATCH_PATTERN.search(text)
        else "unknown"
    )
    await close_session(session)
    closed = time.monotonic()
    path = runs_folder / str(record.session_id) / "run-000001.json"
    while time.monotonic() - closed < 180:
        if path.exists():
            record.saved_after_close_s = time.monotonic() - closed
            read_saved_run(runs_folder, record)
            return
        await asyncio.sleep(0.25)
    session.errors.append("close: no saved run 180 s after the page was closed")


async def reload_page(session: Session, record: RunRecord) -> None:
    """Reloads a page mid-run: it must reattach to its run (the attached notice and the run's
    progress shown again).

    Args:
        session: A chaos session whose run started.
        record: Its run, filled in.
    """
    page = session.page
    try:
        await page.reload(timeout=OPEN_TIMEOUT_MS)
        notice = page.get_by_text(re.compile(ATTACHED_TEXT))
        await notice.first.wait_for(timeout=OPEN_TIMEOUT_MS)
        bar = page.get_by_role("tabpanel", name=TRAIN_TAB).locator("[data-testid=stProgress]")
        await bar.first.wait_for(timeout=OPEN_TIMEOUT_MS)
        record.reattached = True
    except Exception as error:  # counted, never fatal
        record.reattached = False
        session.fail("reload", error)


async def check_live(session: Session, record: RunRecord) -> None:
    """Waits until a reloaded page's run trains, then checks that its progress moves on.

    Args:
        session: A reloaded chaos session whose run is next for the training slot.
        record: Its run (`progress_moved` filled in).
    """
    record.progress_moved = False
    try:
        await wait_until_training(session, timeout=OPEN_TIMEOUT_MS / 1000)
        bar = session.page.get_by_role("tabpanel", name=TRAIN_TAB)
        bar = bar.locator("[data-testid=stProgress]").first
        first = await bar.inner_text(timeout=ACTION_TIMEOUT_MS)
        for _ in range(60):
            await asyncio.sleep(0.5)
            if await bar.inner_text(timeout=ACTION_TIMEOUT_MS) != first:
                record.progress_moved = True
                return
    except Exception as error:  # counted, never fatal
        session.fail("live after reload", error)


async def stop_run(session: Session, record: RunRecord) -> None:
    """Clicks ■ Stop on a reloaded page and waits for "Stopped by request"."""
    try:
        await session.page.get_by_role("button", name="■ Stop").click(timeout=ACTION_TIMEOUT_MS)
        stopped = session.page.get_by_text(ENDED_PATTERNS["stopped"])
        await stopped.first.wait_for(timeout=ACTION_TIMEOUT_MS)
        record.stop_worked = True
        record.page_ending = "stopped"
    except Exception as error:
        record.stop_worked = False
        session.fail("stop after reload", error)


async def chaos(browser: Any, url: str, runs_folder: Path, options: Options, results: Results):
    """Long runs; half the pages close mid-run, half reload theirs (then ■ Stop).

    The first page's run gets the training slot: it is a closer, so its orphan really holds
    the slot until the server cancels it; the first reloader's run is next in the queue, so
    once the orphans are cancelled it trains, and its reloaded page must show it live.

    Args:
        browser: The Playwright browser.
        url: The app's URL.
        runs_folder: The server's FREEZELAB_RUNS_DIR.
        options: Sizes and settings.
        results: Where the figures go.
    """
    roles = ["closer" if i % 2 == 0 else "reloader" for i in range(options.chaos)]
    sessions = [Session(role, i) for i, role in enumerate(roles)]
    results.sessions.extend(sessions)
    addresses = [
        link_address(url, options.links[i % len(options.links)], options.chaos_epochs)
        for i in range(len(sessions))
    ]
    print(f"Chaos: opening {len(sessions)} sessions for long runs...", flush=True)
    await open_sessions(browser, addresses, sessions, options.open_concurrency)
    results.open_seconds.extend(s.open_seconds for s in sessions if s.open_seconds)
    ready = [s for s in sessions if s.page is not None and not s.errors]
    records = [RunRecord(s.role, s.session_id) for s in ready]
    results.runs.extend(records)
    await start_chaos_runs(ready, records)
    pairs = [(s, r) for s, r in zip(ready, records, strict=True) if r.started]
    if pairs and pairs[0][0].role == "closer":
        await wait_until_training(pairs[0][0])  # it holds the slot when its page closes
    reloaders = [(s, r) for s, r in pairs if s.role == "reloader"]
    closers = [(s, r) for s, r in pairs if s.role == "closer"]
    print(f"Chaos: {len(reloaders)} pages reload, {len(closers)} close...", flush=True)
    closing = [asyncio.create_task(close_page(s, r, runs_folder)) for s, r in closers]
    await asyncio.gather(*(reload_page(s, r) for s, r in reloaders))
    await asyncio.gather(*closing)  # the orphans are cancelled: the slot goes to a reloader
    if reloaders and reloaders[0][1].reattached:
        await check_live(*reloaders[0])
    for session, record in reloaders:
        if record.reattached:
            await stop_run(session, record)
    await wait_for_saved_runs(runs_folder, records, timeout=30)
    await asyncio.gather(*(close_session(s) for s in sessions))


async def upload_session(browser: Any, url: str, archive: bytes, index: int, sampler, results):
    """One more session uploads the 10k-image zip; the server's RSS before and after.

    Args:
        browser: The Playwright browser.
        url: The app's URL.
        archive: The zip's bytes.
        index: Number of this upload session.
        sampler: The `ProcessSampler` of the server.
        results: Where the figures go.
    """
    session = Session("upload", index)
    results.sessions.append(session)
    try:
        await open_session(browser, url, session)
        page = session.page
        await go_to_tab(page, "3 · Data")
        await page.get_by_text("Zip of class folders").click(timeout=ACTION_TIMEOUT_MS)
        await wait_idle(page)
        before = await sampler.settled(3.0)
        panel = page.get_by_role("tabpanel", name="3 · Data")
        started = time.monotonic()
        await panel.locator("[data-testid=stFileUploaderDropzoneInput]").first.set_input_files(
            files=[{"name": "digits10k.zip", "mimeType": "application/zip", "buffer": archive}]
        )
        button = page.get_by_role("button", name="Load images")
        await button.wait_for(timeout=ACTION_TIMEOUT_MS)
        await wait_idle(page)
        uploaded = time.monotonic()
        await button.click(timeout=ACTION_TIMEOUT_MS)
        in_use = page.get_by_text(re.compile(r"In use: Uploaded images"))
        await in_use.first.wait_for(timeout=OPEN_TIMEOUT_MS)
        await wait_idle(page)
        loaded = time.monotonic()
        await asyncio.sleep(3.0)
        after = await sampler.settled(2.0)
        results.uploads.append(
            {
                "session": index,
                "rss_before_mib": round(before / MEBIBYTE, 1),
                "rss_after_mib": round(after / MEBIBYTE, 1),
                "increase_mib": round((after - before) / MEBIBYTE, 1),
                "upload_seconds": round(uploaded - started, 2),
                "load_seconds": round(loaded - uploaded, 2),
            }
        )
    except Exception as error:
        session.fail("upload", error)
    # The page stays open: its session (and its dataset) stays in the server's memory.
    return session


# ------------------------------------------------------------------------------ report
@dataclass
class Figure:
    """One reported figure.

    Attributes:
        name: What it is.
        measured: The value in words, e.g. "312 ms".
        target: The target in words ("reported" when there is none).
        verdict: "met", "missed by ...", or "-" for a reported number.
    """

    name: str
    measured: str
    target: str
    verdict: str


def percentile(values: list[float], fraction: float) -> float | None:
    """The `fraction` percentile (linear interpolation) of `values`, None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def at_most(name: str, value: float | None, limit: float, unit: str, shown: str = "") -> Figure:
    """A figure whose target is "<= limit".

    Args:
        name: The figure's name.
        value: The measured value (None: not measured).
        limit: The target's upper bound.
        unit: Unit for both, e.g. "ms".
        shown: The measured text when it should say more than the value.

    Returns:
        The `Figure`.
    """
    if value is None:
        return Figure(name, "not measured", f"<= {limit:g} {unit}", "not measured")
    verdict = "met" if value <= limit else f"missed by {value - limit:.3g} {unit}"
    return Figure(name, shown or f"{value:.3g} {unit}", f"<= {limit:g} {unit}", verdict)


def count_figure(name: str, good: int, total: int, target: str = "all") -> Figure:
    """A figure "good of total" whose target is all of them (or none, for losses)."""
    if target == "none":
        verdict = "met" if good == 0 else f"missed by {good}"
        return Figure(name, f"{good} of {total}", "0", verdict)
    verdict = "met" if good == total else f"missed by {total - good}"
    return Figure(name, f"{good} of {total}", "all", verdict)


def reported(name: str, measured: str) -> Figure:
    """A figure without a target."""
    return Figure(name, measured, "reported", "-")


def milliseconds(values: list[float]) -> str:
    """The p50 and p95 of some latencies, e.g. "112 / 323 ms (n=40)"."""
    if not values:
        return "none measured"
    return f"{percentile(values, 0.5):.0f} / {percentile(values, 0.95):.0f} ms (n={len(values)})"


def seconds_summary(values: list[float]) -> str:
    """The median and max of some durations, e.g. "4.1 / 9.0 s (n=10)"."""
    if not values:
        return "none measured"
    return f"{statistics.median(values):.1f} / {max(values):.1f} s (n={len(values)})"


def click_figures(results: Results) -> list[Figure]:
    """The clickers' figures: rerun latency, tree totals, totals agreement."""
    reruns = [c.rerun_ms for c in results.clicks if c.rerun_ms is not None]
    tabs = [c.rerun_ms for c in results.clicks if c.kind == "tab" and c.rerun_ms is not None]
    trees = [c for c in results.clicks if c.kind == "tree"]
    tree_reruns = [c.rerun_ms for c in trees if c.rerun_ms is not None]
    totals = [c.totals_ms for c in trees if c.totals_ms is not None]
    browser_totals = [c.tree_totals_ms for c in trees if c.tree_totals_ms is not None]
    agree = [c.totals_agree for c in trees if c.totals_agree is not None]
    p95 = percentile(reruns, 0.95)
    shown = ""
    if p95 is not None:
        shown = f"p95 {p95:.0f} ms, p50 {percentile(reruns, 0.5):.0f} ms, n={len(reruns)}"
    no_rerun = sum(1 for c in results.clicks if c.rerun_ms is None)
    to_start = [c.to_server_start_ms for c in results.clicks if c.to_server_start_ms is not None]
    scripts = [c.script_ms for c in results.clicks if c.script_ms is not None]
    rendering = [c.finish_to_idle_ms for c in results.clicks if c.finish_to_idle_ms is not None]
    return [
        at_most(
            "Clickers' rerun latency p95 (click to idle)", p95, TARGET_RERUN_P95_MS, "ms", shown
        ),
        reported("... of which click to run start p50 / p95", milliseconds(to_start)),
        reported("... the run (server) p50 / p95", milliseconds(scripts)),
        reported("... run end to idle shown p50 / p95", milliseconds(rendering)),
        reported("... tab clicks p50 / p95", milliseconds(tabs)),
        reported("... tree clicks p50 / p95", milliseconds(tree_reruns)),
        reported("Tree click to server totals p50 / p95", milliseconds(totals)),
        reported("Tree click to browser-side totals p50 / p95", milliseconds(browser_totals)),
        count_figure("Server totals equal the tree's after a click", sum(agree), len(agree)),
        reported("Clicks without a rerun", str(no_rerun)),
    ]


def count_of(records: list[RunRecord], predicate: Callable[[RunRecord], bool]) -> int:
    """How many runs satisfy `predicate`."""
    return sum(1 for record in records if predicate(record))


def orphan_figure(closers: list[RunRecord], grace: float) -> Figure:
    """The worst time from a page's close to its run saved as orphaned (its slot freed).

    Args:
        closers: The closed pages' runs.
        grace: The server's orphan grace period in seconds.

    Returns:
        The `Figure` (target: grace + 5 s).
    """
    holds = [r.saved_after_close_s for r in closers if r.saved_after_close_s is not None]
    limit = grace + ORPHAN_MARGIN_SECONDS
    if not holds or len(holds) < len(closers):
        return at_most("Orphan: close to slot freed (run saved), worst", None, limit, "s")
    slot = [f"{r.saved_after_close_s:.1f}" for r in closers if r.trained_seconds]
    shown = (
        f"{max(holds):.1f} s (all: {', '.join(f'{h:.1f}' for h in holds)}; "
        f"of runs that trained without their page: {', '.join(slot) or 'none'})"
    )
    return at_most("Orphan: close to slot freed (run saved), worst", max(holds), limit, "s", shown)


def run_figures(results: Results, grace: float) -> list[Figure]:
    """The runs' figures: queue wait, endings, files, proofs, losses, chaos."""
    room = [r for r in results.runs if r.role == "trainer"]
    started = [r for r in results.runs if r.started]
    reloaders = [r for r in results.runs if r.role == "reloader" and r.started]
    closers = [r for r in results.runs if r.role == "closer" and r.started]
    moved = [r.progress_moved for r in reloaders if r.progress_moved is not None]
    slot_waits = [r.slot_wait_s for r in room if r.slot_wait_s is not None]
    first_batches = [r.first_batch_s for r in room if r.first_batch_s is not None]
    finished = count_of(room, lambda r: r.page_ending == "finished")
    saved = count_of(started, lambda r: r.file_ending is not None)
    proven = [r for r in started if r.checked_layers is not None]
    verified = count_of(proven, lambda r: r.verified is True)
    unproven = count_of(started, lambda r: r.file_ending is not None and r.checked_layers is None)
    reattached = count_of(reloaders, lambda r: r.reattached is True)
    stopped = count_of(reloaders, lambda r: r.stop_worked is True)
    orphaned = count_of(closers, lambda r: r.file_ending == "orphaned")
    return [
        reported("Queue wait: Train to slot, median / max", seconds_summary(slot_waits)),
        reported("Train to first batch, median / max", seconds_summary(first_batches)),
        reported("Room: Train to last run's end", f"{results.room_seconds or 0:.0f} s"),
        count_figure("Room runs finished", finished, len(room)),
        count_figure(
            "Room runs orphaned while their page was open",
            count_of(room, lambda r: r.page_ending == "orphaned"),
            len(room),
            "none",
        ),
        count_figure("Runs saved on disk by the server", saved, len(started)),
        count_figure("Trained runs' frozen layers verified unchanged", verified, len(proven)),
        reported("Runs cancelled before their first batch (nothing to verify)", str(unproven)),
        count_figure(
            "Runs lost (started, no saved file)", len(started) - saved, len(started), "none"
        ),
        count_figure("Reloaded pages reattached to their run", reattached, len(reloaders)),
        count_figure("... and the live one's progress moved on", sum(moved), len(moved)),
        count_figure("... and ■ Stop worked", stopped, len(reloaders)),
        count_figure("Closed pages' runs saved as orphaned", orphaned, len(closers)),
        orphan_figure(closers, grace),
    ]


def memory_figures(results: Results) -> list[Figure]:
    """The memory figures: peak RSS, RSS per 10k-image upload session."""
    peak = f"{results.peak_rss / MEBIBYTE:,.0f} MiB"
    figures = [reported("Server peak RSS (whole run)", peak)]
    if results.uploads:
        first = results.uploads[0]
        shown = f"{first['increase_mib']:.0f} MiB (load {first['load_seconds']:.1f} s)"
        name = "RSS increase, one 10k-image 28x28 upload session"
        figures.append(at_most(name, first["increase_mib"], TARGET_UPLOAD_MIB, "MiB", shown))
    more = results.uploads[1:]
    if more:
        mean = statistics.mean(u["increase_mib"] for u in more)
        name = f"... mean over {len(more)} more upload sessions"
        figures.append(at_most(name, mean, TARGET_UPLOAD_MIB, "MiB"))
    return figures


def first_visit_figures(results: Results) -> list[Figure]:
    """The first visit's figures: time to a complete page, the warming-up notice."""
    visit = results.first_visit
    if not visit:
        return [Figure("First visit after start", "failed", "reported", "-")]
    done = visit["health_to_script_done_s"]
    notice = visit["health_to_warming_notice_s"]
    shown = visit["warming_notice_shown"]
    return [
        reported("First visit: server healthy to page complete", f"{done:.1f} s"),
        Figure(
            "First visit: 'warming up' notice shown (or page complete at once)",
            f"shown after {notice:.1f} s" if shown else "not shown",
            "shown, or complete <= 2 s",
            "met" if shown or done <= 2 else "missed: blank until complete",
        ),
    ]


def robustness_figures(results: Results, server_log: dict[str, Any]) -> list[Figure]:
    """Failed sessions and server-log errors."""
    failed = [s for s in results.sessions if s.errors]
    return [
        count_figure("Sessions with a failure", len(failed), len(results.sessions), "none"),
        Figure(
            "Tracebacks / error lines in the server log",
            f"{server_log['tracebacks']} / {server_log['error_lines']}",
            "0",
            "met" if server_log["tracebacks"] == 0 else f"missed by {server_log['tracebacks']}",
        ),
        reported(
            "Server log: fragment reruns dropped / TF retracing warnings",
            f"{server_log.get('lost_fragment_reruns', 0)} / {server_log.get('tf_retracing', 0)}",
        ),
    ]


def scan_server_log(path: Path) -> dict[str, Any]:
    """Counts tracebacks, error lines and known warnings in the server log; keeps examples.

    Args:
        path: The server's log file.

    Returns:
        {"tracebacks", "error_lines", "examples", "lost_fragment_reruns", "tf_retracing"}:
        "lost_fragment_reruns" counts Streamlit's "The fragment with id ... does not exist
        anymore" (a live fragment's rerun that arrived after a full rerun replaced it),
        "tf_retracing" TensorFlow's retracing warnings.
    """
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return {"tracebacks": 0, "error_lines": 0, "examples": ["(no log)"]}
    errors = [
        line
        for line in lines
        if re.search(r"(ERROR|CRITICAL|Exception|Error\b)", line) and "Traceback" not in line
    ]
    return {
        "tracebacks": sum("Traceback (most recent call last)" in line for line in lines),
        "error_lines": len(errors),
        "examples": list(dict.fromkeys(errors))[:15],
        "lost_fragment_reruns": sum("does not exist anymore" in line for line in lines),
        "tf_retracing": sum("triggered tf.function retracing" in line for line in lines),
    }


def format_figures(figures: list[Figure]) -> str:
    """A fixed-width table: figure, measured, target, verdict."""
    rows = [("figure", "measured", "target", "verdict")]
    rows += [(f.name, f.measured, f.target, f.verdict) for f in figures]
    widths = [max(len(row[column]) for row in rows) for column in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def build_report(results: Results, options: Options, server_log: dict[str, Any]) -> dict:
    """Every figure, printed as a table and returned as the JSON report.

    Args:
        results: What was measured.
        options: The run's settings.
        server_log: `scan_server_log`'s summary.

    Returns:
        The report (figures, settings, machine, details).
    """
    figures = (
        first_visit_figures(results)
        + click_figures(results)
        + run_figures(results, options.grace)
        + memory_figures(results)
        + robustness_figures(results, server_log)
    )
    print()
    print(format_figures(figures))
    print(f"\nCPU used per phase, 100% = one core busy ({os.cpu_count()} cores):")
    for phase, cpu in results.cpu.items():
        kinds = ", ".join(
            f"{key[8:-12]} {value}%"
            for key, value in cpu.items()
            if key.startswith("browser ") and value > 0
        )
        print(
            f"  {phase} ({cpu['seconds']:.0f} s): server {cpu['server_cpu_percent']}%, "
            f"browser {cpu['browser_cpu_percent']}% ({kinds}), "
            f"this client {cpu['client_cpu_percent']}%, "
            f"other processes {cpu['other processes_cpu_percent']}%; the server's threads "
            f"waited for a CPU {cpu['server waiting for a CPU_cpu_percent']}% (summed), some "
            f"task waited for a CPU {cpu['cpu_pressure_percent']}% of the time"
        )
    return {
        "figures": [asdict(f) for f in figures],
        "settings": {key: str(value) for key, value in asdict(options).items()},
        "machine": {"cores": os.cpu_count(), "platform": platform.platform()},
        "training_slots": results.slots,
        "browser_priority": results.priorities,
        "cpu": results.cpu,
        "first_visit": results.first_visit,
        "page_open_seconds": seconds_summary(results.open_seconds),
        "clicks": [asdict(c) for c in results.clicks],
        "runs": [asdict(r) for r in results.runs],
        "uploads": results.uploads,
        "session_errors": {f"{s.role} {s.index}": s.errors for s in results.sessions if s.errors},
        "server_log": server_log,
    }


# -------------------------------------------------------------------------------- main
def niced_chromium(niceness: int, folder: Path) -> str:
    """Writes a launcher that runs the system Chromium at a lower CPU priority (`nice`).

    Args:
        niceness: The `nice` increment (0: the same priority as the server).
        folder: Where to write the launcher.

    Returns:
        The launcher's path, for Playwright's `executable_path`.
    """
    launcher = folder / "chromium-niced"
    launcher.write_text(
        f'#!/bin/sh\nexec nice -n {int(niceness)} {shlex.quote(find_chromium())} "$@"\n'
    )
    launcher.chmod(0o755)
    return str(launcher)


def lower_browser_priority(niceness: int) -> str:
    """Gives the browser's scheduling group a lower CPU weight than the server's.

    On one 2-core machine the simulated learners' 30 pages (React re-rendering every delta,
    live charts) want more CPU than the server being measured. Linux with autogroup
    scheduling shares the CPU between sessions first: Playwright starts Chromium in its own
    session, the server runs in its own (`new_session=True`), so a thread-level `nice` alone
    changes nothing between them; the autogroup's nice value (`/proc/<pid>/autogroup`) does.
    With it the browser takes what the server leaves, as learners' own laptops would; other
    programs on the machine keep their usual share.

    Args:
        niceness: The autogroup nice value for the browser's session (0..19).

    Returns:
        What was done, in words, for the report.
    """
    own_session = os.getsid(0)
    for pid in descendants(child_processes(), os.getpid())[1:]:
        with contextlib.suppress(OSError):
            if os.getsid(pid) == own_session:
                continue  # Playwright's driver: in this process's session
            Path(f"/proc/{pid}/autogroup").write_text(str(int(niceness)))
            return f"browser session's autogroup nice {int(niceness)}, threads nice {niceness}"
    return f"browser threads nice {niceness} (no autogroup to set)"


def training_slots() -> int:
    """The server's number of training slots, as the app computes it (see models/slots.py)."""
    configured = os.environ.get("FREEZELAB_TRAINING_SLOTS", "").strip()
    if configured.isdigit() and int(configured) > 0:
        return int(configured)
    return max(1, (os.cpu_count() or 2) // 2)


async def guarded(results: Results, name: str, step: Callable[[], Awaitable[Any]]) -> None:
    """Runs one phase; an unexpected failure is recorded, and the next phase still runs.

    Args:
        results: Where the failure is recorded (as a session "phase").
        name: The phase's name.
        step: The phase.
    """
    try:
        await step()
    except Exception as error:  # a report with what was measured beats none
        phase = Session("phase", 0)
        phase.fail(name, error)
        results.sessions.append(phase)
        print(f"Phase {name} failed: {phase.errors[-1]}", flush=True)


async def uploads_phase(
    browser: Any,
    url: str,
    archive_task: asyncio.Task,
    sampler: ProcessSampler,
    options: Options,
    results: Results,
) -> None:
    """The upload sessions, one after the other (their pages stay open until the last one).

    Args:
        browser: The Playwright browser.
        url: The app's URL.
        archive_task: The task building the zip (`digits_zip`).
        sampler: The `ProcessSampler` of the server.
        options: Sizes and settings.
        results: Where the figures go.
    """
    archive = await archive_task
    print(
        f"Memory: {1 + options.uploads} upload session(s) of a 10k-image zip "
        f"({len(archive) / MEBIBYTE:.1f} MiB)...",
        flush=True,
    )
    sessions = []
    for index in range(1 + options.uploads):
        sessions.append(await upload_session(browser, url, archive, index, sampler, results))
    await asyncio.gather(*(close_session(s) for s in sessions))


async def load_test(options: Options, runs_folder: Path) -> Results:
    """Starts the browser and the server and runs every phase.

    Args:
        options: Sizes and settings.
        runs_folder: The server's fresh FREEZELAB_RUNS_DIR.

    Returns:
        What was measured.
    """
    from playwright.async_api import async_playwright

    results = Results(slots=training_slots())
    archive_task = asyncio.create_task(asyncio.to_thread(digits_zip))
    environment = {
        "FREEZELAB_RUNS_DIR": str(runs_folder),
        "FREEZELAB_ORPHAN_GRACE_S": str(options.grace),
    }
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=niced_chromium(options.browser_nice, runs_folder.parent),
            args=CHROMIUM_ARGS,
        )
        results.priorities = lower_browser_priority(options.browser_nice)
        print(f"Browser priority: {results.priorities}.", flush=True)
        print("Starting the server (log: test-artifacts/loadtest-server.log)...", flush=True)
        with streamlit_server_process(
            log_path=SERVER_LOG, timeout=180, environment=environment, new_session=True
        ) as (url, server):
            healthy_at = time.monotonic()
            sampler = ProcessSampler(server.pid)
            sampler.start()
            meter = CpuMeter(sampler)
            try:
                phases = {
                    "first visit": lambda: first_visit(browser, url, healthy_at, results),
                    "room": lambda: room(browser, url, runs_folder, options, results),
                    "chaos": lambda: chaos(browser, url, runs_folder, options, results),
                    "uploads": lambda: uploads_phase(
                        browser, url, archive_task, sampler, options, results
                    ),
                }
                for name, step in phases.items():
                    with meter.phase(name):
                        await guarded(results, name, step)
            finally:
                sampler.stop()
                results.peak_rss = sampler.peak()
                results.cpu = meter.phases
        await browser.close()
    return results


def main(argv: list[str] | None = None) -> None:
    """Runs the load test, prints the table and writes the JSON report.

    Args:
        argv: Command-line arguments; `sys.argv[1:]` when None.
    """
    options = parse_options(argv)
    work_folder = Path(tempfile.mkdtemp(prefix="freezelab-loadtest-"))
    runs_folder = work_folder / "runs"
    runs_folder.mkdir()
    started = time.monotonic()
    print(
        f"Load test: {options.sessions} sessions ({options.trainers} train), {options.chaos} "
        f"chaos pages, grace {options.grace:g} s, browser niced +{options.browser_nice}, "
        f"{os.cpu_count()} cores.",
        flush=True,
    )
    busy_before = machine_busy_percent()
    print(
        f"Before the start, other programs kept the CPUs {busy_before:.0f}% busy (100% = one "
        "core); every figure below shares the machine with them.",
        flush=True,
    )
    try:
        results = asyncio.run(load_test(options, runs_folder))
        server_log = scan_server_log(SERVER_LOG)
        report = build_report(results, options, server_log)
        report["total_seconds"] = round(time.monotonic() - started)
        report["machine"]["busy_before_start_percent"] = round(busy_before)
        report["runs_folder"] = str(runs_folder) if options.keep_runs else "(deleted)"
        options.output.write_text(json.dumps(report, indent=1, default=str) + "\n")
        print(f"\nTook {report['total_seconds']} s; wrote {options.output}.")
        for name, errors in report["session_errors"].items():
            print(f"  {name}: {'; '.join(errors)[:400]}")
    finally:
        if not options.keep_runs:
            shutil.rmtree(work_folder, ignore_errors=True)


if __name__ == "__main__":
    main()
