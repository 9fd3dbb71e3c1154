"""Saves PNG screenshots of FreezeLab's main steps into docs/ (used by the README tour).

Run with `make screenshots` (needs the dev requirements and a Chromium, see README).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from playwright.sync_api import sync_playwright  # noqa: E402

from tests.browser.harness import launch_chromium, open_app, streamlit_server, wait_for_app  # noqa: E402

DOCS = ROOT / "docs"
BASE = "transfer_model/feature_extractor"


def main() -> None:
    """Drives the default flow and saves one screenshot per step."""
    DOCS.mkdir(exist_ok=True)
    with streamlit_server() as url, sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        open_app(page, url)

        page.get_by_role("tab", name="1 · Model").click()
        page.screenshot(path=DOCS / "1-model.png")

        page.get_by_role("tab", name="2 · Freeze").click()
        page.get_by_label(f"freeze {BASE}", exact=True).click()
        page.locator("[data-testid=stMetricValue]", has_text="165").first.wait_for()
        wait_for_app(page)
        page.screenshot(path=DOCS / "2-freeze.png")

        page.get_by_role("tab", name="3 · Data").click()
        page.screenshot(path=DOCS / "3-data.png")

        page.get_by_role("tab", name="4 · Train").click()
        page.get_by_role("button", name="▶ Train").click()
        page.get_by_text("Finished 3 epoch(s).").wait_for(timeout=120_000)
        wait_for_app(page)
        page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)
        page.screenshot(path=DOCS / "4-train.png")

        page.get_by_role("tab", name="5 · Drift").click()
        drift = page.get_by_role("tabpanel", name="5 · Drift")
        drift.get_by_text("bitwise unchanged").wait_for(timeout=30_000)
        page.locator(".js-plotly-plot").nth(2).wait_for(timeout=60_000)
        page.screenshot(path=DOCS / "5-drift.png")
        # The heatmap (second chart) at the top of the view.
        drift.locator(".js-plotly-plot").nth(1).evaluate("chart => chart.scrollIntoView()")
        page.wait_for_timeout(1000)
        page.screenshot(path=DOCS / "5-drift-heatmap.png")
        browser.close()
    print(f"Saved screenshots in {DOCS}")


if __name__ == "__main__":
    main()
