"""FreezeLab through nginx in front of two Streamlit processes (`deploy/start_replicas.py`).

Two browser contexts are routed to different processes by their `freezelab_route` cookie: the
first gets one from nginx, the second is given a value that nginx's hash maps to the other
process (found by asking the proxy, so nothing depends on luck). Every response names the
process that served it (`X-FreezeLab-Replica`), the websocket's handshake included (read
through the Chrome DevTools Protocol), and nginx's access log says the same after the
websockets close. A session link opened in the other context lands on the other process, which
rebuilds the session from the shared runs folder.

Each test runs twice: with the replicas training in their own processes ("local"), and with
the recipe's Ray head, every run trained on it ("ray"). Marked slow (two servers; about 40 s
local and 90 s with Ray on 2 cores); `make test` runs it. It skips only when no nginx can be
found (`make test` installs Debian's as root), and the Ray half when Ray is not installed.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import socket
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from deploy.start_replicas import (
    NGINX_INSTALL_HINT,
    REPLICA_HEADER,
    ROUTE_COOKIE,
    Replicas,
    find_nginx,
)
from tests.browser.conftest import ARTIFACTS, ORPHAN_GRACE_SECONDS
from tests.browser.harness import open_app, wait_for_app
from tests.browser.test_browser import (
    expected_counts_with_base_frozen,
    go,
    metric,
    session_of,
    set_epochs,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=["local", "ray"])
def replicas(request, tmp_path_factory) -> Iterator[Replicas]:
    """Two replicas behind nginx on free ports, sharing a fresh runs folder; their runs train
    in the replicas' own processes ("local") or on a Ray head the recipe starts ("ray")."""
    if find_nginx() is None:
        pytest.skip(NGINX_INSTALL_HINT)
    on_ray = request.param == "ray"
    if on_ray:
        pytest.importorskip("ray", reason="Ray is optional: pip install -r requirements-ray.txt")
    folder = ARTIFACTS / f"replicas-{request.param}"  # nginx.conf and every log, kept
    shutil.rmtree(folder, ignore_errors=True)
    environment = {"FREEZELAB_ORPHAN_GRACE_S": str(ORPHAN_GRACE_SECONDS)}
    if not on_ray:
        environment["FREEZELAB_EXECUTOR"] = "local"
    running = Replicas(
        replicas=2,
        proxy_port=0,
        first_port=0,
        runs_dir=tmp_path_factory.mktemp("shared-runs"),
        folder=folder,
        ray=on_ray,
        ray_port=free_port_below_ray_workers() if on_ray else 6379,
        ray_cpus=4,  # each replica keeps one idle worker; a run takes it
        environment=environment,
    )
    with running:
        yield running


def free_port_below_ray_workers() -> int:
    """A free port for the Ray head outside Ray's worker range (10002-19999)."""
    for port in range(6400, 6500):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("No free port in 6400-6499 for the Ray head.")


def replica_for_route(url: str, route: str) -> str:
    """The replica nginx sends a browser with `route` as its route cookie to."""
    request = urllib.request.Request(
        f"{url}/_stcore/health", headers={"Cookie": f"{ROUTE_COOKIE}={route}"}
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        return reply.headers[REPLICA_HEADER]


def replica_addresses(replicas: Replicas) -> list[str]:
    """Each replica as `$upstream_addr` names it, e.g. "127.0.0.1:8501"."""
    return [url.removeprefix("http://") for url in replicas.replica_urls]


def the_other(replicas: Replicas, home: str) -> str:
    """The replica of two that is not `home`."""
    (other,) = set(replica_addresses(replicas)) - {home}
    return other


def route_to(url: str, replica: str) -> str:
    """A route cookie value that nginx's consistent hash maps to `replica`."""
    for index in range(200):
        route = f"replicas-test-{index}"
        if replica_for_route(url, route) == replica:
            return route
    raise AssertionError(f"no route among 200 leads to {replica}")


@dataclass
class Visitor:
    """A browser context through the proxy, and every replica that answered it."""

    context: BrowserContext
    page: Page
    responses: list[tuple[str, str | None]] = field(default_factory=list)  # (url, replica)
    websocket_replicas: list[str] = field(default_factory=list)  # one per websocket handshake

    @property
    def route(self) -> str:
        return next(c["value"] for c in self.context.cookies() if c["name"] == ROUTE_COOKIE)

    @property
    def replicas(self) -> set[str | None]:
        """The replicas that answered its HTTP requests."""
        return {replica for _, replica in self.responses}

    def served_by_only(self, replica: str) -> bool:
        """Whether every response came from `replica` (lists the others when not)."""
        others = [(url, by) for url, by in self.responses if by != replica]
        assert not others, f"{len(others)} responses not from {replica}: {others[:5]}"
        return bool(self.responses)


@pytest.fixture
def new_visitor(browser, request) -> Iterator[Callable[..., Visitor]]:
    """Makes visitors (`visitor`); a failed test leaves a screenshot of each in test-artifacts/."""
    made: list[Visitor] = []
    failed_before = request.session.testsfailed

    def make(url: str, route: str | None = None) -> Visitor:
        made.append(visitor(browser, url, route))
        return made[-1]

    yield make
    for index, seen in enumerate(made):
        if request.session.testsfailed > failed_before and not seen.page.is_closed():
            name = f"replicas-{request.node.name}-{index}.png".replace("[", "-").replace("]", "")
            with contextlib.suppress(Exception):
                seen.page.screenshot(path=ARTIFACTS / name, full_page=True)
        with contextlib.suppress(Exception):
            seen.context.close()


def visitor(browser: Browser, url: str, route: str | None = None) -> Visitor:
    """A new context (its own cookies, so its own URL session) that records who served it."""
    context = browser.new_context()
    if route is not None:
        context.add_cookies([{"name": ROUTE_COOKIE, "value": route, "url": url}])
    page = context.new_page()
    seen = Visitor(context, page)
    page.on(  # every response over the network (not the page's own blob: URLs)
        "response",
        lambda response: (
            seen.responses.append((response.url, response.headers.get(REPLICA_HEADER.lower())))
            if response.url.startswith(f"{url}/")
            else None
        ),
    )
    # Playwright does not show a websocket's handshake headers; the DevTools protocol does.
    devtools = context.new_cdp_session(page)
    devtools.send("Network.enable")
    devtools.on(
        "Network.webSocketHandshakeResponseReceived",
        lambda event: seen.websocket_replicas.append(
            {k.lower(): v for k, v in event["response"]["headers"].items()}.get(
                REPLICA_HEADER.lower()
            )
        ),
    )
    return seen


def websocket_upstreams(access_log: Path, route: str) -> set[str]:
    """The upstreams nginx logged for a route's websockets (logged when each one closed)."""
    pattern = re.compile(r'"GET /_stcore/stream[^"]*" 101 route=(\S+) upstream=(\S+)')
    found = set()
    for line in access_log.read_text().splitlines():
        match = pattern.search(line)
        if match and match.group(1) == route:
            found.add(match.group(2))
    return found


def share_link(page: Page) -> str:
    """The instructor link the Export step builds."""
    go(page, "Export")
    panel = page.get_by_role("tabpanel", name="Export")
    link = panel.locator("[data-testid=stCode]").filter(has_text=re.compile(r"^http"))
    expect(link).to_have_count(1, timeout=60_000)
    return link.inner_text().strip()


def test_two_contexts_stay_on_their_own_replica_websocket_included(new_visitor, replicas):
    first = new_visitor(replicas.url)  # nginx picks its route
    open_app(first.page, replicas.url)
    assert re.fullmatch(r"[0-9a-f]{32}", first.route), "nginx set no route cookie"
    (home,) = first.replicas
    other = the_other(replicas, home)
    second = new_visitor(replicas.url, route_to(replicas.url, other))
    open_app(second.page, replicas.url)

    # The websocket works through the proxy: a click reruns the script on the server, whose
    # totals come back; each context changes only its own session.
    go(first.page, "2 · Freeze")
    first.page.get_by_role("button", name=re.compile(r"^Freeze base")).click()
    trainable, non_trainable = expected_counts_with_base_frozen()
    expect(metric(first.page, "Trainable params")).to_have_text(trainable)
    expect(metric(first.page, "Non-trainable params")).to_have_text(non_trainable)
    go(second.page, "2 · Freeze")
    expect(metric(second.page, "Trainable params")).to_have_text("14,293")

    # The Export step's links use the proxy's address, the one the browser sees.
    for seen in (first, second):
        assert seen.page.url.startswith(f"{replicas.url}/?session=")
        link = share_link(seen.page)
        assert re.match(rf"{re.escape(replicas.url)}/?\?", link), link

    # Every response and every websocket of a context came from its own replica.
    assert first.served_by_only(home) and second.served_by_only(other)
    assert first.websocket_replicas and set(first.websocket_replicas) == {home}
    assert second.websocket_replicas and set(second.websocket_replicas) == {other}
    routes = first.route, second.route
    first.context.close()
    second.context.close()
    deadline = time.monotonic() + 10
    while not all(websocket_upstreams(replicas.access_log, route) for route in routes):
        assert time.monotonic() < deadline, "nginx did not log the closed websockets"
        time.sleep(0.2)
    assert websocket_upstreams(replicas.access_log, routes[0]) == {home}
    assert websocket_upstreams(replicas.access_log, routes[1]) == {other}


def test_a_session_link_opened_on_the_other_replica_is_rebuilt_from_the_shared_runs(
    new_visitor, replicas
):
    trainer = new_visitor(replicas.url)
    open_app(trainer.page, replicas.url)
    (home,) = trainer.replicas
    go(trainer.page, "2 · Freeze")
    trainer.page.get_by_role("button", name=re.compile(r"^Freeze base")).click()
    trainable, _ = expected_counts_with_base_frozen()
    expect(metric(trainer.page, "Trainable params")).to_have_text(trainable)
    set_epochs(trainer.page, 1)
    go(trainer.page, "4 · Train")
    # Once the epochs' rerun is over: a click that lands while the server reruns the script
    # for the field was once dropped on a loaded machine (the page still said "Press ▶ Train").
    expect(trainer.page.get_by_label("Epochs", exact=True)).to_have_value("1")
    wait_for_app(trainer.page)
    trainer.page.get_by_role("button", name="▶ Train").click()
    expect(trainer.page.get_by_text("Finished 1 epoch(s).")).to_be_visible(timeout=120_000)
    if replicas.ray:  # trained on the recipe's Ray head, not in the replica's own process
        train = trainer.page.get_by_role("tabpanel", name="4 · Train")
        expect(train.get_by_text(re.compile(r"On a Ray worker: "))).to_be_visible()
    proof = "All 6 frozen layers are bitwise unchanged."
    expect(
        trainer.page.get_by_role("tabpanel", name="4 · Train").get_by_text(proof)
    ).to_be_visible()
    session_link = trainer.page.url
    assert session_link.startswith(f"{replicas.url}/?session=")
    session_folder = replicas.runs_dir / session_of(trainer.page)
    deadline = time.monotonic() + 30  # the server saves a run right after it ends
    while not (session_folder / "run-000001.json").is_file():
        assert time.monotonic() < deadline, "the ended run was not saved"
        time.sleep(0.2)
    assert (session_folder / "session.json").is_file()

    # Another browser, routed to the other process, which has never seen this session.
    other = the_other(replicas, home)
    guest = new_visitor(replicas.url, route_to(replicas.url, other))
    open_app(guest.page, session_link)
    assert guest.served_by_only(other)
    go(guest.page, "2 · Freeze")
    expect(metric(guest.page, "Trainable params")).to_have_text(trainable)  # the plan, from disk
    go(guest.page, "Compare runs")
    compare = guest.page.get_by_role("tabpanel", name="Compare runs")
    stored = compare.get_by_test_id("stMultiSelect").get_by_text("Run 1", exact=True)
    expect(stored).to_be_visible(timeout=30_000)  # the stored run, chosen to compare
    wait_for_app(guest.page)
