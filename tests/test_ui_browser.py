"""The dashboard in a real browser (Debian chromium driven by Playwright), on the demo family with the session's
vLLM backend: open the page, run a small sweep, see one plot point per ω, pick two variants, send one prompt, get
two different replies, export the YAML of the picked variant. A screenshot of each step goes to test-artifacts/."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import yaml
from ui_probe import telling_prompt

sync_api = pytest.importorskip("playwright.sync_api")
PlaywrightTimeout = sync_api.TimeoutError

pytestmark = [pytest.mark.browser, pytest.mark.vllm]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "ui-browser"
if not Path(CHROMIUM).exists():  # checked before any fixture starts the (slow) engine
    pytest.skip("Debian chromium is not installed (scripts/setup_env.sh --browser)", allow_module_level=True)
TIMEOUT_MS = 240_000  # a sweep on 2 shared CPU cores; not a timing assertion, a hang guard
# How many points the tradeoff plot's ω curve shows right now (plotly keeps its traces on the element).
CURVE_POINTS = (
    "(document.querySelector('#tradeoff-plot .js-plotly-plot')?.data || [])"
    ".filter(t => t.name === 'merge ω').map(t => t.x.length).concat([0])[0]"
)


@pytest.fixture(scope="module")
def app_info(vllm_backend, demo_family, tmp_path_factory):
    """The dashboard on the session's shared vLLM backend, with its own results store."""
    from ui.app import build_app, launch

    work = tmp_path_factory.mktemp("ui-browser")
    store = work / "results.db"
    app = build_app(
        store_path=store,
        allowed_roots=[Path(__file__).resolve().parent.parent / "assets", work],
        backend=vllm_backend,
        family=demo_family,
        default_weights="0,1",
    )
    launch(app, port=None, block=False)
    try:
        yield {"url": app.local_url, "store": store}
    finally:
        app.close()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            yield b
        finally:
            b.close()


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_sweep_chat_export_in_a_browser(app_info, browser, demo_family):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(app_info["url"])
    page.get_by_role("tab", name="Checkpoints").wait_for()
    page.wait_for_function("document.querySelector('#compat-report').innerText.includes('Compatible')")
    shot(page, "1-open")

    # --- a small sweep: ω = 0 and 1 (+ the |D|/|G| point), no reference models, three suites --------------------
    page.get_by_role("tab", name="Sweep").click()
    assert page.locator("#weights").get_by_role("textbox").input_value() == "0,1"
    page.locator("#use-refs").get_by_role("checkbox").uncheck()
    keep = ("general", "harmful", "benign")
    for name in [Path(p).name for p in demo_family.suites]:
        if not any(k in name for k in keep):
            page.locator("#suites").get_by_label(name, exact=True).uncheck()
    page.locator("#run-sweep").click()
    page.wait_for_function("document.querySelector('#sweep-status').innerText.startsWith('Done')")
    plot = page.locator("#tradeoff-plot .js-plotly-plot")
    plot.wait_for()
    # The plot fills point by point and redraws after the status line: give the last redraw time to land, then
    # assert on whatever is drawn.
    with contextlib.suppress(PlaywrightTimeout):
        page.wait_for_function(CURVE_POINTS + " >= 3", timeout=60_000)
    traces = plot.evaluate("el => el.data.map(t => ({name: t.name, n: (t.x || []).length}))")
    curve = next(t for t in traces if t["name"] == "merge ω")
    assert curve["n"] == 3  # one point per ω: 0, |D|/|G|, 1
    assert any(t["name"].startswith("|D|/|G|") for t in traces)
    safety = page.locator("#safety-plot .js-plotly-plot")
    safety.wait_for()
    assert "merge ω" in safety.evaluate("el => el.data.map(t => t.name)")
    assert page.locator("#results-table .virtual-row").count() == 3
    shot(page, "2-sweep")

    # --- the user picks another y axis: the tradeoff plot redraws on it, keeping every point ---------------------
    title = "document.querySelector('#tradeoff-plot .js-plotly-plot').layout.title.text"
    assert "harmful-refusal" in page.evaluate(title)
    page.locator("#y-metric input").click()
    page.get_by_role("option", name="benign-compliance rate").click()
    page.wait_for_function(title + ".includes('benign-compliance')")
    assert page.evaluate(CURVE_POINTS) == 3

    # --- pick two variants by clicking their rows in the table (gr.Plot has no click event) --------------------
    table = page.locator("#results-table")
    # Each click lands before the next: the note under the table names what is in the chat so far.
    note = "s => document.querySelector('#picked-note').innerText.includes(s)"
    table.get_by_role("gridcell", name="ω=0", exact=True).click()
    page.wait_for_function(note, arg="ω=0")
    table.get_by_role("gridcell", name="ω=1", exact=True).click()
    page.wait_for_function(note, arg="ω=1")
    page.get_by_role("tab", name="Chat").click()
    picker = page.locator("#picker")
    assert picker.get_by_label("ω=0", exact=True).is_checked()
    assert picker.get_by_label("ω=1", exact=True).is_checked()

    # --- one prompt to both; replies stream into each pane, each with a refusal badge ---------------------------
    prompt = telling_prompt(app_info["store"], demo_family, "ω=0", "ω=1")
    page.locator("#prompt").get_by_role("textbox").fill(prompt)
    page.locator("#send").click()
    for pane in ("#pane-0", "#pane-1"):
        page.locator(f"{pane} .ms-badge-refuse, {pane} .ms-badge-comply").first.wait_for()
    replies = [page.locator(f"{pane} [data-testid=bot]").last.inner_text() for pane in ("#pane-0", "#pane-1")]
    users = [page.locator(f"{pane} [data-testid=user]").last.inner_text() for pane in ("#pane-0", "#pane-1")]
    assert users == [prompt, prompt]
    assert all(r.strip() for r in replies)
    assert replies[0] != replies[1]
    assert not page.locator("#pane-2").is_visible()
    shot(page, "3-chat")

    # --- export the YAML of the picked variant (the last one added: ω=1) ------------------------------------------
    page.get_by_role("tab", name="Export").click()
    assert page.locator("#export-variant input").first.input_value() == "ω=1"
    page.locator("#export-yaml").click()
    link = page.locator("#yaml-file a").first
    link.wait_for()
    data = yaml.safe_load(page.request.get(link.get_attribute("href")).text())
    assert data["merge_method"] == "task_arithmetic"
    assert Path(data["base_model"]).name == Path(demo_family.base).name
    weights = {Path(m["model"]).name: m["parameters"]["weight"] for m in data["models"]}
    assert weights == {
        Path(demo_family.general).name: pytest.approx(1.0),
        Path(next(iter(demo_family.skills.values()))).name: pytest.approx(1.0),
    }
    shot(page, "4-export")
    page.close()


# --- issue 13: click-to-chat, behaviour browser, shared URL, blind votes, imported CSV -------------------------------
KEEP_SUITES = ("general", "harmful", "benign")


def show_small_sweep(page, url: str, demo_family) -> None:
    """The first test's small sweep on this page: reopened from the module's store, or run if this test runs
    alone."""
    page.goto(url)
    page.get_by_role("tab", name="Sweep").click()
    page.wait_for_function("document.querySelector('#sweep-status').innerText.length > 0")
    page.locator("#use-refs").get_by_role("checkbox").uncheck()
    for name in [Path(p).name for p in demo_family.suites]:
        if not any(k in name for k in KEEP_SUITES):
            page.locator("#suites").get_by_label(name, exact=True).uncheck()
    page.locator("#reopen").click()
    status = "document.querySelector('#sweep-status').innerText"
    page.wait_for_function(f"{status}.startsWith('Loaded') || {status}.startsWith('No stored')")
    if page.evaluate(status).startswith("No stored"):
        page.locator("#run-sweep").click()
        page.wait_for_function(f"{status}.startsWith('Done')")
    page.locator("#tradeoff-plot .js-plotly-plot").wait_for()
    # the page's click listener is attached once plotly has drawn the graph
    page.wait_for_function("document.querySelector('#tradeoff-plot .js-plotly-plot').dataset.msClick === '1'")


def click_point(page, plot_id: str, label: str) -> None:
    """A real mouse click on the marker of `label` (its pixel position from plotly's own axes), the plot scrolled
    into view first (a click outside the viewport lands nowhere)."""
    page.locator(f"#{plot_id}").scroll_into_view_if_needed()
    pos = page.evaluate(
        """([id, label]) => {
            const el = document.querySelector(`#${id} .js-plotly-plot`);
            const t = el.data.find(t => (t.customdata || []).includes(label));
            const i = t.customdata.indexOf(label);
            const xa = el._fullLayout.xaxis, ya = el._fullLayout.yaxis, r = el.getBoundingClientRect();
            return [r.left + xa._offset + xa.l2p(t.x[i]), r.top + ya._offset + ya.l2p(t.y[i])];
        }""",
        [plot_id, label],
    )
    page.mouse.move(*pos)
    page.mouse.click(*pos)


def test_click_points_browse_behaviour_and_share_the_url(app_info, browser, demo_family):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(TIMEOUT_MS)
    show_small_sweep(page, app_info["url"], demo_family)
    note = "s => document.querySelector('#picked-note').innerText.includes(s)"

    # --- click a point of each plot: the variants join the chat panes, as a table row click does -----------------
    click_point(page, "tradeoff-plot", "ω=1")
    page.wait_for_function(note, arg="ω=1")
    click_point(page, "safety-plot", "ω=0")
    page.wait_for_function(note, arg="ω=0")
    shot(page, "5-clicked-points")
    page.get_by_role("tab", name="Chat").click()
    picker = page.locator("#picker")
    assert (
        picker.get_by_label("ω=1", exact=True).is_checked()
        and picker.get_by_label("ω=0", exact=True).is_checked()
    )
    page.locator("#pane-1").wait_for()
    assert page.locator("#pane-0").is_visible() and page.locator("#pane-1").is_visible()
    shot(page, "6-click-to-chat")

    # --- behaviour browser: a harmful item that flips from complied to refused as ω grows --------------------------
    harmful = next(Path(p).name for p in demo_family.suites if "harmful" in Path(p).name)
    page.get_by_role("tab", name="Behaviour").click()
    page.locator("#browse-suite input").click()
    page.get_by_role("option", name=harmful, exact=True).click()
    page.locator("#browse-mode").get_by_label("outcome flips along ω").check()
    page.wait_for_function(
        "s => document.querySelector('#browse-summary').innerText.includes(s)",
        arg=f"{harmful} (safety:harmful), sorted",
    )
    table = page.locator("#browse-table")
    header = table.get_by_role("row").first.get_by_role("columnheader").all_inner_texts()
    variants = [i for i, h in enumerate(header) if h.strip().startswith("ω=")]
    rows = [r.get_by_role("gridcell").all_inner_texts() for r in table.get_by_role("row").all()[1:12]]
    flips = [r for r in rows if r and r[variants[0]] == "complied" and r[variants[-1]] == "refused"]
    assert flips, f"no harmful item flips from complied to refused: {rows[:3]}"
    item, prompt = flips[0][0], flips[0][3]
    table.get_by_role("gridcell", name=item, exact=True).click()
    page.wait_for_function("s => document.querySelector('#browse-detail').innerText.includes(s)", arg=item)
    shot(page, "7-behaviour-browser")
    page.get_by_role("tab", name="Chat").click()
    assert page.locator("#prompt").get_by_role("textbox").input_value() == prompt

    # --- the URL now carries the sweep, the chat's variants and the browser's item; a new page restores them -----
    page.wait_for_function("s => decodeURIComponent(location.search).includes(s)", arg=f"item={item}")
    shared = page.url
    assert "sweep=" in shared and "variants=" in shared
    other = browser.new_page(viewport={"width": 1400, "height": 1000})
    other.set_default_timeout(TIMEOUT_MS)
    other.goto(shared)
    other.get_by_role("tab", name="Sweep").click()
    other.wait_for_function("document.querySelector('#sweep-status').innerText.startsWith('Restored')")
    other.locator("#results-table .virtual-row").first.wait_for()
    points = other.locator("#results-table .virtual-row").count()
    other.get_by_role("tab", name="Chat").click()
    restored = other.locator("#picker")
    assert restored.get_by_role("checkbox").count() == points >= 3  # the same sweep's points
    assert (
        restored.get_by_label("ω=1", exact=True).is_checked()
        and restored.get_by_label("ω=0", exact=True).is_checked()
    )
    other.locator("#pane-1").wait_for()
    other.wait_for_function(
        "s => document.querySelector('#prompt textarea, #prompt input').value === s", arg=prompt
    )
    other.get_by_role("tab", name="Behaviour").click()
    other.wait_for_function("s => document.querySelector('#browse-detail').innerText.includes(s)", arg=item)
    assert other.locator("#browse-suite input").input_value() == harmful
    shot(other, "8-shared-url")
    other.close()
    page.close()


def test_blind_votes_change_the_strength_plot_and_imported_csv_is_drawn(
    app_info, browser, demo_family, tmp_path
):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(TIMEOUT_MS)
    show_small_sweep(page, app_info["url"], demo_family)

    # --- reference results from a CSV: drawn on the tradeoff plot, marked imported -------------------------------
    csv_path = tmp_path / "paper.csv"
    csv_path.write_text("variant,omega,general,harmful_refusal,benign_compliance\nPaper PTM,0.2,41,88,70\n")
    page.get_by_text("reference results from a CSV").click()
    page.locator("#import-csv input[type=file]").set_input_files(str(csv_path))
    page.wait_for_function("document.querySelector('#import-note').innerText.includes('Imported 1')")
    traces = "document.querySelector('#tradeoff-plot .js-plotly-plot').data.map(t => t.name)"
    page.wait_for_function(f"{traces}.includes('imported (CSV)')")
    shot(page, "9-imported-csv")

    # --- blind A/B: vote, see the names, see the strength plot change ------------------------------------------
    page.get_by_role("tab", name="A/B").click()
    strength = (
        "(document.querySelector('#ab-strength-plot .js-plotly-plot')?.data || [])"
        ".filter(t => (t.name || '').startsWith('vote strength')).map(t => JSON.stringify(t.y)).join()"
    )
    page.locator("#ab-draw").click()
    page.wait_for_function("document.querySelector('#ab-prompt textarea, #ab-prompt input').value.length > 0")
    seen = []
    for verdict in ("A", "A", "B"):
        page.locator("#ab-ask").click()
        # The new pair, not the last one: the reveal is cleared when the ask starts, the replies fill when it ends.
        page.wait_for_function(
            "!document.querySelector('#ab-revealed') && document.querySelector('#ab-reply-a textarea').value.length > 0"
        )
        page.locator(f"#ab-vote-{verdict}").click()
        page.locator("#ab-revealed").wait_for()
        assert "A was" in page.locator("#ab-revealed").inner_text()
        page.wait_for_function(
            "n => document.querySelector('#ab-count').innerText.startsWith(n + ' vote')", arg=len(seen) + 1
        )
        page.wait_for_function(f"{strength}.length > 0 && !{json_list(seen)}.includes({strength})")
        seen.append(page.evaluate(strength))
        shot(page, f"10-votes-{len(seen)}")
    assert len(set(seen)) == 3  # every vote moved the strengths
    page.close()


def json_list(values: list[str]) -> str:
    import json

    return json.dumps(values)
