"""Tracking beyond the embedded store: a real `mlflow server` on loopback, and PostgreSQL."""
import os
import shutil
from pathlib import Path

from conftest import ROOT, needs, postgres, read_runs, run_cli


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update"]  # a closed network


def have_playwright() -> bool:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return False
    return True


def look_at_ui(server: str, experiment_id: str, parent: str, children: dict, shots: Path) -> None:
    """The experiment's runs page in headless Chromium: the parent, expanded, shows its children by
    name; a child's page draws its loss chart. Screenshots go to `shots`."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.goto(f"{server}/#/experiments/{experiment_id}/runs")
            page.get_by_text(parent, exact=True).first.wait_for(timeout=90_000)
            close = page.locator('button[data-component-id="mlflow.assistant.chat_panel.close"]')
            if close.count():  # MLflow 3's assistant panel covers a third of the page
                close.first.click()
            page.locator('[role="gridcell"]').filter(has_text=parent).locator("button").first.click()  # expand
            for name in children:
                page.get_by_text(name, exact=True).first.wait_for(timeout=30_000)
            rows = page.locator('[role="row"]').all_inner_texts()
            assert all(any(n in r for r in rows) for n in [parent, *children]), rows
            page.screenshot(path=str(shots / "runs.png"))
            run_id = next(iter(children.values()))
            page.goto(f"{server}/#/experiments/{experiment_id}/runs/{run_id}/model-metrics")
            page.get_by_placeholder("Search metric charts").fill("loss")
            title = page.get_by_text("loss", exact=True).first  # the per-step loss chart's title
            title.wait_for(timeout=60_000)
            page.locator(".js-plotly-plot, svg.main-svg").first.wait_for(timeout=30_000)  # drawn
            title.scroll_into_view_if_needed()
            page.screenshot(path=str(shots / "loss_chart.png"))
        finally:
            browser.close()


def test_sweep_against_a_real_mlflow_server(mlflow_server, tmp_path):
    proc = run_cli(["-m", "model=coin", "guide=manual", "seed=0,1", "steps=200",
                    f"tracking.uri={mlflow_server}", "tracking.experiment=server",
                    f"hydra.sweep.dir={tmp_path}/multirun"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client, runs = read_runs(mlflow_server, "server")
    parents = [r for r in runs if r.data.tags.get("runner.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    assert len(parents) == 1 and len(children) == 2
    assert all(r.info.status == "FINISHED" for r in runs)
    run_id = children[0].info.run_id
    assert "params.json" in {a.path for a in client.list_artifacts(run_id)}  # through the server
    assert len(client.get_metric_history(run_id, "loss")) == 200
    # the MLflow UI, looked at in a real browser (issue 7)
    if not CHROMIUM or not have_playwright():
        needs("the UI check needs Chromium (apt-get install chromium; .ci/run installs it) and playwright")
    parent = parents[0]
    look_at_ui(mlflow_server, parent.info.experiment_id, parent.info.run_name,
               {c.info.run_name: c.info.run_id for c in sorted(children, key=lambda c: c.info.run_name)}, tmp_path)
    assert (tmp_path / "runs.png").stat().st_size > 10_000 and (tmp_path / "loss_chart.png").stat().st_size > 10_000


#: the browser tests' screenshots, kept after the run (RUNNER_UI_SHOTS to put them elsewhere)
SHOTS = Path(os.environ.get("RUNNER_UI_SHOTS", ROOT / "ui-screenshots"))
CARD = '[data-testid="experiment-view-compare-runs-card"]'
SECTION = '[data-testid="experiment-view-compare-runs-section-header"]'


def chart_count(page) -> int:
    """Charts in the chart view: the sum of its sections' counts, `grad_norm (6)`, `Model metrics
    (13)` (cards are drawn lazily, so counting them would count what is on screen)."""
    import re

    return sum(int(re.search(r"\((\d+)\)", t).group(1)) for t in page.locator(SECTION).all_inner_texts())


def legend(page, title: str) -> list[str]:
    """The series of the chart `title` as its legend names them (the chart search box, a regular
    expression, shows that chart alone); a line chart's `<series> (<metric>)` without the metric."""
    page.get_by_placeholder("Search metric charts").fill(f"^{title}$")
    card = page.locator(CARD).filter(has=page.get_by_text(title, exact=True)).first
    card.locator(".js-plotly-plot, svg.main-svg").first.wait_for(timeout=30_000)
    item = card.locator("div:has(> svg path) > span")
    item.first.wait_for(timeout=30_000)
    return [t.removesuffix(f" ({title})") for t in item.all_inner_texts()]


def look_at_charts(server: str, experiment_id: str, parent: str, groups: list[str], shots: Path) -> dict:
    """A sweep in MLflow's chart view, as a person opens it: the parent collapsed, then expanded;
    then Group by -> config_group (two clicks). What was counted, and screenshots in `shots`."""
    from playwright.sync_api import sync_playwright

    seen = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.goto(f"{server}/#/experiments/{experiment_id}/runs?compareRunsMode=CHART")
            page.get_by_text(parent, exact=True).first.wait_for(timeout=90_000)
            close = page.locator('button[data-component-id="mlflow.assistant.chat_panel.close"]')
            if close.count():
                close.first.click()
            page.locator(CARD).first.wait_for(timeout=60_000)
            seen["collapsed"] = chart_count(page)
            page.screenshot(path=str(shots / "charts_collapsed.png"))
            page.locator('[role="gridcell"]').filter(has_text=parent).locator("button").first.click()  # expand
            page.wait_for_function(f"document.querySelectorAll('{SECTION}').length > 2", timeout=60_000)
            page.wait_for_timeout(2000)
            seen["expanded"] = chart_count(page)
            page.screenshot(path=str(shots / "charts_expanded.png"))
            page.get_by_role("button", name="Group by").click()  # click 1
            page.get_by_role("menuitemcheckbox", name="config_group", exact=True).click()  # click 2
            page.keyboard.press("Escape")
            page.get_by_text(f"Group: {groups[0]}", exact=False).first.wait_for(timeout=60_000)
            rows = page.locator('[role="row"]').all_inner_texts()
            seen["group_rows"] = sorted(r.split("Group: ", 1)[1].splitlines()[:2][0] for r in rows if "Group: " in r)
            seen["group_sizes"] = [r.split("Group: ", 1)[1].splitlines()[1] for r in rows if "Group: " in r]
            seen["final_loss"] = legend(page, "final_loss")
            page.screenshot(path=str(shots / "charts_grouped_final_loss.png"))
            seen["loss"] = legend(page, "loss")
            page.screenshot(path=str(shots / "charts_grouped_loss.png"))
        finally:
            browser.close()
    return seen


def look_at_parent(server: str, experiment_id: str, run_id: str, description: str, shots: Path) -> str:
    """The sweep parent's page: its description says what the sweep varied; its artifact
    sweep_table.json shows as a table (MLflow's table artifact). The table's text."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.goto(f"{server}/#/experiments/{experiment_id}/runs/{run_id}")
            page.get_by_text(description, exact=True).first.wait_for(timeout=90_000)
            close = page.locator('button[data-component-id="mlflow.assistant.chat_panel.close"]')
            if close.count():
                close.first.click()
            page.screenshot(path=str(shots / "parent_overview.png"))
            page.goto(f"{server}/#/experiments/{experiment_id}/runs/{run_id}/artifacts")
            page.get_by_text("sweep_table.json", exact=True).first.click()
            page.get_by_text("View as table").first.wait_for(timeout=60_000)
            page.get_by_text("best_run_id", exact=True).first.wait_for(timeout=30_000)
            page.screenshot(path=str(shots / "parent_table.png"))
            return page.locator("main, body").first.inner_text()
        finally:
            browser.close()


def test_a_sweeps_chart_view_shows_its_runs_and_groups_by_config(mlflow_server, tmp_path):
    """Issue 18: the chart view of a 2x2 sweep with 2 seeds has no chart of the parent's own (it
    logs only final_loss, the children's name), and Group by -> config_group draws one series per
    configuration (MLflow's mean and min/max over the seeds)."""
    proc = run_cli(["-m", "model=gmm", "guide=autodelta,autonormal", "optim.lr=0.05,0.1", "seed=0,1", "steps=50",
                    "restarts=4", f"tracking.uri={mlflow_server}", "tracking.experiment=charts",
                    f"hydra.sweep.dir={tmp_path}/multirun"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client, runs = read_runs(mlflow_server, "charts")
    (parent,) = [r for r in runs if r.data.tags.get("runner.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    assert len(children) == 8 and all(r.info.status == "FINISHED" for r in runs)
    names = {m for c in children for m in c.data.metrics}
    assert set(parent.data.metrics) == {"final_loss"} <= names  # the parent adds no metric name
    groups = sorted({c.data.tags["config_group"] for c in children})
    assert groups == [f"guide={g} model=gmm optim.lr={lr} restarts=4 steps=50"
                      for g in ("autodelta", "autonormal") for lr in ("0.05", "0.1")]
    if not CHROMIUM or not have_playwright():
        needs("the UI check needs Chromium (apt-get install chromium; .ci/run installs it) and playwright")
    shots = SHOTS / "sweep_chart_view"
    shots.mkdir(parents=True, exist_ok=True)
    seen = look_at_charts(mlflow_server, parent.info.experiment_id, parent.info.run_name, groups, shots)
    assert seen["collapsed"] == 1  # the parent alone: its final_loss (the best child's)
    assert seen["expanded"] == len(names)  # no more charts than the children have metric names
    assert seen["group_rows"] == groups and seen["group_sizes"] == ["2"] * 4  # one group per config, 2 seeds each
    # one series per config (MLflow's mean, min/max band over the 2 seeds); the parent has no
    # config_group: MLflow lists it as "Unassigned" (the table's "Additional runs", one eye-click hides it)
    for chart in ("final_loss", "loss"):
        assert sorted(seen[chart]) == sorted([*groups, "Unassigned"]), (chart, seen[chart])
    first = ("Sweep of 8 jobs over guide (autodelta, autonormal) x optim.lr (0.05, 0.1) x seed (0, 1); "
             "fixed: model=gmm steps=50 restarts=4.")
    assert parent.data.tags["mlflow.note.content"].splitlines()[0] == first
    text = look_at_parent(mlflow_server, parent.info.experiment_id, parent.info.run_id, first, shots)
    assert all(g in text for g in groups), text[-2000:]  # one row per configuration
    for name in ("charts_collapsed", "charts_expanded", "charts_grouped_final_loss", "charts_grouped_loss",
                 "parent_overview", "parent_table"):
        assert (shots / f"{name}.png").stat().st_size > 10_000


def open_sweep_view(url: str, parent_id: str, groups: list[str], shots: Path) -> dict:
    """The address a sweep prints, opened as it is (no click): what the page shows first."""
    from playwright.sync_api import sync_playwright

    seen = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.goto(url)
            page.get_by_text(f"Group: {groups[0]}", exact=False).first.wait_for(timeout=90_000)
            close = page.locator('button[data-component-id="mlflow.assistant.chat_panel.close"]')
            if close.count():
                close.first.click()
            page.locator(CARD).first.locator(".js-plotly-plot, svg.main-svg").first.wait_for(timeout=60_000)
            page.wait_for_timeout(2000)
            rows = page.locator('[role="row"]').all_inner_texts()
            seen["group_rows"] = sorted(r.split("Group: ", 1)[1].splitlines()[0] for r in rows if "Group: " in r)
            seen["runs"] = sum(1 for r in rows if "Hide run" in r)
            seen["charts"] = chart_count(page)
            seen["titles"] = [name for name in ("final_loss", "loss")
                              if page.locator(CARD).filter(has=page.get_by_text(name, exact=True)).count() == 1]
            seen["filter"] = parent_id in page.url
            page.screenshot(path=str(shots / "sweep_view_first.png"))
        finally:
            browser.close()
    return seen


def test_a_sweep_prints_the_address_of_its_charts_grouped_by_config(mlflow_server, tmp_path):
    """Issue 29: the page a sweep points to shows, with no click, its children only, grouped by
    configuration, and the two charts that compare them: the loss curves and the final losses."""
    proc = run_cli(["-m", "model=gmm", "guide=autodelta,autonormal", "seed=0,1", "steps=50", "restarts=4",
                    f"tracking.uri={mlflow_server}", "tracking.experiment=view",
                    f"hydra.sweep.dir={tmp_path}/multirun"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, runs = read_runs(mlflow_server, "view")
    (parent,) = [r for r in runs if r.data.tags.get("runner.role") == "sweep"]
    (line,) = [ln for ln in proc.stdout.splitlines() if ln.startswith("runner: sweep charts, grouped by config: ")]
    url = line.split(": ", 2)[2]
    assert url == (f"{mlflow_server}/#/experiments/{parent.info.experiment_id}/runs?compareRunsMode=CHART"
                   f"&viewStateShareKey=sweep-{parent.info.run_id[:8]}")  # a server's own address: nothing to start
    if not CHROMIUM or not have_playwright():
        needs("the UI check needs Chromium (apt-get install chromium; .ci/run installs it) and playwright")
    shots = SHOTS / "sweep_view"
    shots.mkdir(parents=True, exist_ok=True)
    groups = [f"guide={g} model=gmm restarts=4 steps=50" for g in ("autodelta", "autonormal")]
    seen = open_sweep_view(url, parent.info.run_id, groups, shots)
    assert seen["group_rows"] == groups and seen["runs"] == 4 and seen["filter"], seen  # the children, by config
    assert seen["charts"] == 2 and seen["titles"] == ["final_loss", "loss"], seen  # nothing else first
    assert (shots / "sweep_view_first.png").stat().st_size > 10_000


def test_run_against_postgresql(tmp_path):
    with postgres("mlflow") as uri:
        proc = run_cli(["model=coin", "guide=manual", "steps=100", f"tracking.uri={uri}",
                        f"hydra.run.dir={tmp_path}/run"], cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        _, runs = read_runs(uri)
        assert len(runs) == 1 and runs[0].info.status == "FINISHED"
        assert runs[0].data.metrics["final_loss"] > 0
