"""End-to-end scenarios in a real Chromium: what AppTest cannot see (the tree's JS, plotly)."""

from __future__ import annotations

import io
import json
import math
import re
import time
import zipfile

from PIL import Image
from playwright.sync_api import Page, expect

from models import LayerTree, build_default_transfer_model
from tests.browser.harness import open_app, wait_for_app

BASE = "transfer_model/feature_extractor"


def checkbox(page: Page, path: str):
    return page.get_by_label(f"freeze {path}", exact=True)


def metric(page: Page, label: str):
    return page.locator("[data-testid=stMetric]", has_text=label).first.locator(
        "[data-testid=stMetricValue]"
    )


def go(page: Page, tab: str) -> None:
    page.get_by_role("tab", name=tab).click()


def set_epochs(page: Page, epochs: int) -> None:
    field = page.get_by_label("Epochs", exact=True)
    field.fill(str(epochs))
    field.press("Enter")
    wait_for_app(page)


def plotly_traces(page: Page, index: int) -> list[dict]:
    chart = page.locator(".js-plotly-plot").nth(index)
    chart.wait_for(timeout=60_000)
    # _fullData holds the decoded arrays (plotly sends numbers base64-encoded).
    return chart.evaluate(
        "el => el._fullData.map(t => ({name: t.name, dash: t.line ? t.line.dash : null,"
        " color: t.line ? t.line.color : null, y: Array.from(t.y || [])}))"
    )


def expected_counts_with_base_frozen() -> tuple[str, str]:
    tree = LayerTree(build_default_transfer_model())
    tree.set_frozen(BASE, True)
    totals = tree.totals()
    return f"{totals.trainable:,}", f"{totals.non_trainable:,}"


def test_newcomer_freezes_the_feature_extractor_trains_and_sees_the_proof(page: Page, app_url):
    open_app(page, app_url)
    expect(page.get_by_text("Bundled digits CNN").first).to_be_visible()
    go(page, "2 · Freeze")
    expect(metric(page, "Trainable params")).to_have_text("14,293")
    checkbox(page, BASE).click()
    trainable, non_trainable = expected_counts_with_base_frozen()
    expect(metric(page, "Trainable params")).to_have_text(trainable)
    expect(metric(page, "Non-trainable params")).to_have_text(non_trainable)
    expect(checkbox(page, f"{BASE}/conv1")).to_be_checked()

    set_epochs(page, 2)
    go(page, "4 · Train")
    page.get_by_role("button", name="▶ Train").click()
    # The Train tab's bar refreshes every second (the sidebar's status every 2 s).
    bar = page.get_by_role("tabpanel", name="4 · Train").locator("[data-testid=stProgress]")
    seen = set()
    deadline = time.monotonic() + 120
    while not page.get_by_text("Finished 2 epoch(s).").is_visible():
        assert time.monotonic() < deadline, "training did not finish"
        if bar.count():
            seen.add(bar.first.inner_text())
        page.wait_for_timeout(200)
    assert len(seen) >= 2, f"the progress bar never moved: {seen}"

    proof = "All 6 frozen layers are bitwise unchanged."
    # The proof shows where a newcomer is looking (Train), and in full under Drift.
    expect(page.get_by_role("tabpanel", name="4 · Train").get_by_text(proof)).to_be_visible()
    go(page, "5 · Drift")
    expect(page.get_by_role("tabpanel", name="5 · Drift").get_by_text(proof)).to_be_visible()
    traces = plotly_traces(page, 0)  # the drift lines (a closed tab renders nothing)
    frozen = [t for t in traces if t["dash"] == "dash"]
    trainable_traces = [t for t in traces if t["dash"] != "dash" and t["y"]]
    assert len(frozen) == 6
    assert all(len(trace["y"]) > 2 for trace in frozen)
    assert all(value == 0 for trace in frozen for value in trace["y"])
    assert any(max(trace["y"]) > 0 for trace in trainable_traces)


def test_each_tab_starts_right_under_the_header(page: Page, app_url):
    open_app(page, app_url)
    for tab in ("1 · Model", "2 · Freeze", "4 · Train"):
        go(page, tab)
        wait_for_app(page)
        top = page.get_by_role("tab", name=tab).bounding_box()["y"]
        assert top < 70, f"{top:.0f} px of blank space above the {tab} tab"


def test_tri_state_and_the_effective_state_badge(page: Page, app_url):
    open_app(page, app_url)
    go(page, "2 · Freeze")
    checkbox(page, f"{BASE}/conv1").click()
    wait_for_app(page)
    parent = checkbox(page, BASE)
    expect(parent).not_to_be_checked()
    assert parent.evaluate("el => el.indeterminate") is True
    parent.click()
    wait_for_app(page)
    expect(parent).to_be_checked()
    assert parent.evaluate("el => el.indeterminate") is False
    for child in ("conv1", "batch_norm1", "conv3", "global_pool"):
        expect(checkbox(page, f"{BASE}/{child}")).to_be_checked()
    checkbox(page, f"{BASE}/conv3").click()
    wait_for_app(page)
    row = page.locator(f'[data-path="{BASE}/conv3"]').first
    expect(row.get_by_text("parent frozen, still trains")).to_be_visible()
    expect(parent).to_be_checked()
    assert parent.evaluate("el => el.indeterminate") is True


def test_search_filters_and_expand_collapse_all(page: Page, app_url):
    open_app(page, app_url)
    go(page, "2 · Freeze")
    rows = page.locator(".row[data-path]")
    search = page.get_by_label("search layers")
    search.fill("batch_norm")
    page.wait_for_timeout(300)
    visible = [
        p
        for p in rows.evaluate_all("rs => rs.filter(r => r.offsetParent).map(r => r.dataset.path)")
    ]
    assert f"{BASE}/batch_norm2" in visible and BASE in visible and "transfer_model" in visible
    assert f"{BASE}/conv2" not in visible and "transfer_model/classifier" not in visible
    search.fill("")
    page.get_by_role("button", name="Collapse all").click()
    page.wait_for_timeout(300)
    expect(checkbox(page, f"{BASE}/conv1")).to_be_hidden()
    page.get_by_role("button", name="Expand all").click()
    expect(checkbox(page, f"{BASE}/conv1")).to_be_visible()


def test_stop_during_training_keeps_results_and_a_new_start_works(page: Page, app_url):
    open_app(page, app_url)
    set_epochs(page, 100)
    go(page, "4 · Train")
    page.get_by_role("button", name="▶ Train").click()
    train = page.get_by_role("tabpanel", name="4 · Train")
    expect(train.get_by_text(re.compile(r"Epoch \d+/100 · batch"))).to_be_visible(timeout=90_000)
    shown = train.locator("[data-testid=stProgress]").first.inner_text()
    epochs_seen = int(re.search(r"Epoch (\d+)/100", shown).group(1))
    page.get_by_role("button", name="■ Stop").click()
    stopped = page.get_by_text(re.compile(r"Stopped by request after \d+ epoch"))
    expect(stopped).to_be_visible(timeout=10_000)
    epochs_done = int(re.search(r"after (\d+) epoch", stopped.inner_text()).group(1))
    # An epoch takes well under a second here: the stop lands within a few epochs of the click
    # (the page refreshes once a second), far from the 100 planned.
    assert epochs_seen - 1 <= epochs_done <= epochs_seen + 10
    expect(page.locator(".js-plotly-plot").first).to_be_visible(timeout=60_000)
    set_epochs(page, 1)
    page.get_by_role("button", name="▶ Train").click()
    expect(page.get_by_text("Finished 1 epoch(s).")).to_be_visible(timeout=90_000)
    expect(page.get_by_text(re.compile(r"Run 2 · 1 epochs")).first).to_be_visible()


def test_two_browser_contexts_do_not_share_a_model(new_page, app_url):
    first = new_page()
    second = new_page()
    open_app(first, app_url)
    open_app(second, app_url)
    go(first, "2 · Freeze")
    go(second, "2 · Freeze")
    checkbox(first, BASE).click()
    trainable, _ = expected_counts_with_base_frozen()
    expect(metric(first, "Trainable params")).to_have_text(trainable)
    set_epochs(first, 1)
    first.get_by_role("button", name="▶ Train").click()
    go(first, "4 · Train")
    expect(first.get_by_text("Finished 1 epoch(s).")).to_be_visible(timeout=90_000)
    second.reload()
    wait_for_app(second)
    go(second, "2 · Freeze")
    expect(metric(second, "Trainable params")).to_have_text("14,293")
    expect(checkbox(second, BASE)).not_to_be_checked()
    expect(checkbox(second, f"{BASE}/conv1")).not_to_be_checked()


def test_bad_uploads_show_a_clear_message_and_the_page_keeps_working(page: Page, app_url):
    open_app(page, app_url)
    page.get_by_text("Your own .keras / .h5 file").click()
    wait_for_app(page)
    page.locator("[data-testid=stFileUploaderDropzoneInput]").first.set_input_files(
        files=[{"name": "notes.keras", "mimeType": "application/octet-stream", "buffer": b"hello"}]
    )
    expect(page.get_by_text(re.compile("not a Keras model file"))).to_be_visible(timeout=30_000)

    go(page, "3 · Data")
    page.get_by_text("Zip of class folders").click()
    wait_for_app(page)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for index in range(3):
            image = io.BytesIO()
            Image.new("RGB", (8, 8), (index * 40, 0, 0)).save(image, format="PNG")
            archive.writestr(f"cats/{index}.png", image.getvalue())
    data_tab = page.get_by_role("tabpanel", name="3 · Data")
    data_tab.locator("[data-testid=stFileUploaderDropzoneInput]").first.set_input_files(
        files=[{"name": "one.zip", "mimeType": "application/zip", "buffer": buffer.getvalue()}]
    )
    wait_for_app(page)
    page.get_by_role("button", name="Load images").click()
    expect(page.get_by_text(re.compile("only 1 class"))).to_be_visible(timeout=30_000)
    # The page still works: the bundled task is still in use and training runs.
    set_epochs(page, 1)
    page.get_by_role("button", name="▶ Train").click()
    go(page, "4 · Train")
    expect(page.get_by_text("Finished 1 epoch(s).")).to_be_visible(timeout=90_000)


def test_efficientnet_tree_click_updates_totals_quickly(page: Page, app_url, artifacts):
    open_app(page, app_url)
    page.get_by_text("keras.applications").first.click()
    wait_for_app(page)
    page.get_by_label("keras.applications model").click()
    page.get_by_role("option", name=re.compile("EfficientNetB0")).click()
    wait_for_app(page)
    page.get_by_text("Use ImageNet weights").click()
    wait_for_app(page)
    page.get_by_role("button", name=re.compile("^Load EfficientNetB0")).click()
    wait_for_app(page)
    expect(page.get_by_text("not pretrained").first).to_be_visible(timeout=120_000)
    go(page, "2 · Freeze")
    total = metric(page, "Trainable params")
    before = total.inner_text()
    base = page.locator('.row[data-path$="/stem_conv"]').first.get_attribute("data-path")
    started = time.perf_counter()
    checkbox(page, base).click()
    expect(total).not_to_have_text(before, timeout=30_000)
    elapsed_ms = (time.perf_counter() - started) * 1000
    nodes = page.locator(".row[data-path]").count()
    (artifacts / "click_to_update.json").write_text(
        json.dumps({"model": "EfficientNetB0", "nodes": nodes, "click_to_update_ms": elapsed_ms})
    )
    print(f"EfficientNetB0 ({nodes} nodes): click-to-update {elapsed_ms:.0f} ms")
    assert nodes > 240
    # Instant feedback: the tree sums the totals in the browser on each click, before the
    # rerun; they must equal Keras's own counts for the plan the boxes show (issue 12).
    check_random_clicks_against_keras(page, base)


def _tree_state(page: Page) -> tuple[frozenset[str], int, int]:
    """The plan the boxes show and the totals the tree computed in the browser."""
    boxes = page.locator("input[type=checkbox][data-path]").evaluate_all(
        "boxes => boxes.map(b => [b.getAttribute('data-path'), b.checked])"
    )
    summary = page.locator(".fl-summary")
    return (
        frozenset(path for path, checked in boxes if checked),
        int(summary.get_attribute("data-trainable")),
        int(summary.get_attribute("data-non-trainable")),
    )


def check_random_clicks_against_keras(page: Page, base: str) -> None:
    """Clicks the base, a block under it and random nodes; after each click the browser's
    totals equal Keras's counts for the plan the boxes show, and so do the server's."""
    import random

    from models.application_entries import APPLICATION_ENTRIES
    from models.catalogue import load_template
    from models.datasets import DEFAULT_DATASET, load_bundled_dataset
    from models.workspace import Workspace

    size = APPLICATION_ENTRIES["efficientnet_b0"].default_input_size
    workspace = Workspace(
        load_template("efficientnet_b0", input_size=size, pretrained=False),
        load_bundled_dataset(DEFAULT_DATASET),
    )
    paths = [p for p in workspace.tree.paths() if p.count("/") >= 2]
    top_block = next(p for p in paths if p.rsplit("/", 1)[-1].startswith("block1a_"))
    generator = random.Random(3)
    # A parent frozen, then a child set back to trainable under it ("still trains" badge).
    clicks = [base.rsplit("/", 1)[0], top_block, *generator.sample(paths, 6)]
    for path in clicks:
        checkbox(page, path).click()
        plan, trainable, non_trainable = _tree_state(page)  # the same frame, before a rerun
        workspace.apply_plan(plan)
        keras_trainable, keras_non_trainable = (
            sum(math.prod(w.shape) for w in workspace.model.trainable_weights),
            sum(math.prod(w.shape) for w in workspace.model.non_trainable_weights),
        )
        assert (trainable, non_trainable) == (keras_trainable, keras_non_trainable), path
        assert workspace.tree.totals().trainable == keras_trainable
        # The server's exact totals follow after the rerun (expect retries until it has run).
        expect(metric(page, "Trainable params")).to_have_text(f"{keras_trainable:,}")
        wait_for_app(page)


# ------------------------------------------------------------- a room: refresh and close
def session_of(page: Page) -> str:
    return re.search(r"[?&]session=([A-Za-z0-9_-]+)", page.url).group(1)


def test_a_refresh_mid_run_reattaches_to_the_run_and_keeps_plan_and_settings(page: Page, app_url):
    open_app(page, app_url)
    go(page, "2 · Freeze")
    checkbox(page, BASE).click()
    trainable, _ = expected_counts_with_base_frozen()
    expect(metric(page, "Trainable params")).to_have_text(trainable)
    go(page, "3 · Data")
    split = page.get_by_role("slider", name="Validation split")
    split.focus()
    split.press("ArrowRight")  # 0.20 -> 0.25
    wait_for_app(page)
    set_epochs(page, 200)
    page.get_by_role("button", name="▶ Train").click()
    expect(page.get_by_text(re.compile(r"Epoch \d+/200 · batch")).first).to_be_visible(
        timeout=90_000
    )
    page.reload()
    # The refreshed page opens on the run, still live, and says so.
    expect(page.get_by_text(re.compile("still training: this page is attached"))).to_be_visible(
        timeout=90_000
    )
    bar = page.get_by_role("tabpanel", name="4 · Train").locator("[data-testid=stProgress]")
    first = bar.first.inner_text()
    expect(bar.first).not_to_have_text(first, timeout=30_000)  # progress moves on
    expect(page.get_by_label("Epochs", exact=True)).to_have_value("200")
    page.get_by_role("button", name="■ Stop").click()
    expect(page.get_by_text(re.compile(r"Stopped by request after \d+ epoch"))).to_be_visible(
        timeout=30_000
    )
    go(page, "2 · Freeze")
    expect(checkbox(page, BASE)).to_be_checked()
    expect(metric(page, "Trainable params")).to_have_text(trainable)
    go(page, "3 · Data")
    expect(page.get_by_role("slider", name="Validation split")).to_have_value("0.25")


def test_an_open_page_that_sends_nothing_for_longer_than_the_grace_keeps_its_job(
    page: Page, app_url, runs_folder
):
    """A starved server (or a busy tab) can delay a page's heartbeats past the grace period;
    its socket is still open, so the server must not take it for a closed page."""
    from tests.browser.conftest import ORPHAN_GRACE_SECONDS

    open_app(page, app_url)
    set_epochs(page, 1000)
    page.get_by_role("button", name="▶ Train").click()
    expect(page.get_by_text(re.compile(r"Epoch \d+/1000 · batch")).first).to_be_visible(
        timeout=90_000
    )
    record = runs_folder / session_of(page) / "run-000001.json"
    # Pause the page's JavaScript: no heartbeat, no rerun, no message is sent or handled; the
    # browser's network stack keeps the websocket open and answers the server's pings.
    debugger = page.context.new_cdp_session(page)
    debugger.send("Debugger.enable")
    debugger.send("Debugger.pause")
    time.sleep(ORPHAN_GRACE_SECONDS + 8)
    assert not record.exists(), "the open page's run was cancelled as orphaned"
    debugger.send("Debugger.resume")
    debugger.detach()
    bar = page.get_by_role("tabpanel", name="4 · Train").locator("[data-testid=stProgress]")
    go(page, "4 · Train")
    first = bar.first.inner_text()
    expect(bar.first).not_to_have_text(first, timeout=30_000)  # still training, still live
    page.get_by_role("button", name="■ Stop").click()
    expect(page.get_by_text(re.compile(r"Stopped by request after \d+ epoch"))).to_be_visible(
        timeout=30_000
    )
    assert json.loads(record.read_text())["ending"] == "stopped"


def test_a_closed_page_has_its_job_cancelled_after_the_grace_period_and_saved_as_orphaned(
    new_page, app_url, runs_folder
):
    from tests.browser.conftest import ORPHAN_GRACE_SECONDS

    leaving = new_page()
    open_app(leaving, app_url)
    set_epochs(leaving, 1000)
    leaving.get_by_role("button", name="▶ Train").click()
    expect(leaving.get_by_text(re.compile(r"Epoch \d+/1000 · batch")).first).to_be_visible(
        timeout=90_000
    )
    address, session_id = leaving.url, session_of(leaving)
    leaving.context.close()  # the learner closes the tab mid-run
    closed_at = time.monotonic()
    record = runs_folder / session_id / "run-000001.json"
    while not record.exists():
        assert time.monotonic() - closed_at < ORPHAN_GRACE_SECONDS + 60, "never cancelled"
        time.sleep(0.5)
    stored = json.loads(record.read_text())
    assert stored["ending"] == "orphaned" and stored["state"] == "cancelled"
    assert time.monotonic() - closed_at > ORPHAN_GRACE_SECONDS - 3  # not before the grace
    # The slot is free: another learner's run starts and finishes at once.
    other = new_page()
    open_app(other, app_url)
    set_epochs(other, 1)
    other.get_by_role("button", name="▶ Train").click()
    go(other, "4 · Train")
    expect(other.get_by_text("Finished 1 epoch(s).")).to_be_visible(timeout=60_000)
    # Coming back to the same link shows the run, marked as orphaned.
    returning = new_page()
    open_app(returning, address)
    go(returning, "4 · Train")
    expect(returning.get_by_text(re.compile("Ended as orphaned"))).to_be_visible(timeout=30_000)


# ------------------------------------------------------------------------------- LoRA
def test_a_lora_chip_adapts_a_layer_and_the_proof_checks_its_kernel(page: Page, app_url):
    from models.lora import LoraSetting, enable_lora

    open_app(page, app_url)
    go(page, "2 · Freeze")
    checkbox(page, f"{BASE}/batch_norm1").click()  # a frozen layer next to the LoRA one
    wait_for_app(page)
    page.get_by_label(f"add LoRA on {BASE}/conv2", exact=True).click()
    expect(page.get_by_text("LoRA r4 α4").first).to_be_visible(timeout=30_000)
    expect(page.get_by_label(f"remove LoRA on {BASE}/conv2", exact=True)).to_be_visible()
    # Keras's own counts for the same model: conv2 adapted with rank 4, batch_norm1 frozen.
    reference = build_default_transfer_model()
    tree = LayerTree(reference)
    enable_lora(tree.layer(f"{BASE}/conv2"), LoraSetting(4))
    tree = LayerTree(reference)
    tree.set_frozen(f"{BASE}/batch_norm1", True)
    trainable = sum(math.prod(w.shape) for w in reference.trainable_weights)
    assert tree.totals().trainable == trainable
    expect(metric(page, "Trainable params")).to_have_text(f"{trainable:,}")
    summary = page.get_by_test_id("freezelab-layer-tree").locator(".fl-summary")
    expect(summary).to_have_attribute("data-trainable", str(trainable))  # the browser's sums

    set_epochs(page, 1)
    page.get_by_role("button", name="▶ Train").click()
    go(page, "4 · Train")
    expect(page.get_by_text("Finished 1 epoch(s).")).to_be_visible(timeout=120_000)
    go(page, "5 · Drift")
    proof = "All 1 frozen layer and 1 LoRA kernel are bitwise unchanged."
    drift_panel = page.get_by_role("tabpanel", name="5 · Drift")
    expect(drift_panel.get_by_text(proof)).to_be_visible()
    # The effective kernel's drift, next to the adapters' size (Keras's own variables' sizes).
    conv2 = tree.layer(f"{BASE}/conv2")
    adapters = sum(math.prod(v.shape) for v in (conv2.lora_kernel_a, conv2.lora_kernel_b))
    line = drift_panel.get_by_text(f"{BASE}/conv2 (r4 α4): the effective kernel moved")
    expect(line).to_contain_text(f"its adapters hold {adapters:,} parameters")
    moved = re.search(r"moved ([0-9.]+)% of its norm", line.inner_text())
    assert moved is not None and float(moved.group(1)) > 0, line.inner_text()
