"""The HTML leaderboard: self-contained, escaped, bold best values, a plot per table; and in a
real headless Chromium it lays out, sorts on a click and raises no error."""

from __future__ import annotations

import json
import re
import struct
import subprocess
from datetime import datetime, timezone
from html import unescape
from html.parser import HTMLParser
from pathlib import Path

import pytest

from harness.execution.external import external_config
from harness.publishing.html import render_html
from harness.publishing.leaderboard import Row, Table, Teacher, leaderboard_tables
from harness.publishing.scatter import plot_axes, scatter_svg
from harness.store.store import Store

GRID = "html-demo"
XSS = "<script>alert(1)</script>"
XSS_DEVICE = '<img src=x onerror="alert(2)">'
CHECKS = ("ordering", "eps_sweep", "batch_invariant", "in_threat_model")
WHEN = datetime(2025, 1, 2, 3, 4, tzinfo=timezone.utc)
RB = "Chen2021LTD_WRN34_10"

TEACHER_ACC = {"clean": 0.8492, "autoattack": 0.5394}
# (method, student, teacher or None, seed, schedule, accuracies, failed checks, device)
RUNS = [
    ("dgad", "resnet18", "wrn34-10", 0, "full",
     {"clean": 0.82, "fgsm": 0.60, "pgd10": 0.55, "autoattack": 0.52}, (), "NVIDIA H100"),
    ("dgad", "resnet18", "wrn34-10", 1, "full",
     {"clean": 0.84, "fgsm": 0.62, "pgd10": 0.57, "autoattack": 0.54}, (), "NVIDIA H100"),
    ("rslad", "resnet18", "wrn34-10", 0, "short",
     {"clean": 0.85, "fgsm": 0.605, "pgd10": 0.54, "autoattack": 0.50}, ("eps_sweep",), None),
    ("pgd-at", "resnet18", None, 0, "full",
     {"clean": 0.80, "fgsm": 0.58, "pgd10": 0.53, "autoattack": 0.47}, (), "NVIDIA H100"),
    (XSS, "mobilenet_v2", "wrn34-10", 0, "full",
     {"clean": 0.78, "fgsm": 0.50, "pgd10": 0.45}, (), XSS_DEVICE),
    ("trades", "mobilenet_v2", None, 0, "full",
     {"clean": 0.79, "fgsm": 0.52, "pgd10": 0.48}, (), None),
    ("dgad", "mobilenet_v2", "wrn34-10", 0, "full",
     {"clean": 0.76, "fgsm": 0.55, "pgd10": 0.50}, (), None),
]  # fmt: skip


def _config(method, student, teacher, seed, schedule):
    return {
        "kind": "student",
        "method": {"name": method, "hparams": {"eps": 8 / 255, "gamma": 5.0}},
        "dataset": {"name": "cifar10", "options": {}},
        "model": student,
        "teacher": {"name": teacher, "model": teacher, "source": "robustbench", "robustbench": RB}
        if teacher
        else None,
        "seed": seed,
        "train": {"epochs": 10 if schedule == "short" else 100},
        "full_epochs": 100,
        "schedule": schedule,
        "grids": [GRID],
    }


#: Per-class accuracy of three classes around a run's average: the first class is the worst.
SPREAD = (-0.12, 0.06, 0.06)


def _metrics(acc, failed, device, per_class=True):
    return {
        "results": {
            attack: {
                "accuracy": value,
                "n": 10000,
                "params": {"name": attack, "eps": 8 / 255},
                **({"per_class": [value + d for d in SPREAD]} if per_class else {}),
            }
            for attack, value in acc.items()
        },
        "checks": {c: {"ok": c not in failed} for c in CHECKS},
        "provenance": {
            "code": "3f2a9c1",
            "packages": {"torch": "2.13.0"},
            **({"gpu": device} if device else {"device": "cpu"}),
        },
        "wall_time_s": 5400.0,
    }


def fabricate_store(root: Path) -> Store:
    store = Store(root)
    for i, (method, student, teacher, seed, schedule, acc, failed, device) in enumerate(RUNS):
        run_id = f"run{i}-{student}-s{seed}-{i:04x}abcd"
        store.begin(run_id, _config(method, student, teacher, seed, schedule))
        # the XSS row: evaluated before per-class accuracies were kept
        store.finish(run_id, _metrics(acc, failed, device, per_class=method != XSS))
    # the teacher evaluated on its own: `bench eval Chen2021LTD_WRN34_10 --robustbench`
    config = external_config(
        "robustbench", RB, {"robustbench": RB}, {"name": "cifar10", "options": {}}
    )
    store.begin("eval-teacher-0000000000", config)
    store.finish("eval-teacher-0000000000", _metrics(TEACHER_ACC, (), "NVIDIA H100"))
    return store


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    return fabricate_store(tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="module")
def tables(store) -> list[Table]:
    tables = leaderboard_tables(store, GRID)
    assert [(t.student, t.teacher) for t in tables] == [
        ("mobilenet_v2", "wrn34-10"),
        ("resnet18", "wrn34-10"),
    ]
    return tables


@pytest.fixture(scope="module")
def page(tables) -> str:
    return render_html(tables, GRID, generated=WHEN)


class Dom(HTMLParser):
    """Just enough of the DOM for the assertions: elements with attributes, text and nesting."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[dict] = []
        self._open: list[dict] = []
        self.feed(text)

    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source"}

    def handle_starttag(self, tag, attrs):
        el = {"tag": tag, "attrs": dict(attrs), "text": "", "parents": list(self._open)}
        self.elements.append(el)
        if tag not in self.VOID:
            self._open.append(el)

    def handle_startendtag(self, tag, attrs):  # <line/>: no content
        el = {"tag": tag, "attrs": dict(attrs), "text": "", "parents": list(self._open)}
        self.elements.append(el)

    def handle_endtag(self, tag):
        for i in range(len(self._open) - 1, -1, -1):
            if self._open[i]["tag"] == tag:
                del self._open[i:]
                break

    def handle_data(self, data):
        for el in self._open:
            el["text"] += data

    def find(self, tag: str, cls: str | None = None, inside: dict | None = None) -> list[dict]:
        return [
            e
            for e in self.elements
            if e["tag"] == tag
            and (cls is None or cls in e["attrs"].get("class", "").split())
            and (inside is None or any(p is inside for p in e["parents"]))
        ]


def _normal(text: str) -> str:
    return " ".join(text.split())


def _pairs(dom: Dom, dl: dict) -> list[tuple[str, str]]:
    """(term, definition) of a <dl>, in order."""
    terms = [_normal(e["text"]) for e in dom.find("dt", inside=dl)]
    return list(zip(terms, [_normal(e["text"]) for e in dom.find("dd", inside=dl)]))


# -- static checks --------------------------------------------------------------------------------
def test_page_is_self_contained(page):
    assert "http://" not in page and "https://" not in page
    assert "@import" not in page and "url(" not in page
    dom = Dom(page)
    refs = [
        value
        for e in dom.elements
        for name, value in e["attrs"].items()
        if name in ("src", "href", "xlink:href", "action", "srcset", "poster", "data")
    ]
    assert refs and all(r.startswith(("#", "data:")) for r in refs), refs
    csp = [e for e in dom.find("meta") if e["attrs"].get("http-equiv") == "Content-Security-Policy"]
    assert csp and "default-src 'none'" in csp[0]["attrs"]["content"]
    assert not [s for s in dom.find("script") if "src" in s["attrs"]]
    assert not [s for s in dom.find("link") if s["attrs"].get("rel") == "stylesheet"]


def test_header_and_every_table(page, tables):
    dom = Dom(page)
    assert _normal(dom.find("h1")[0]["text"]) == f"Grid {GRID}"
    assert "2025-01-02 03:04 UTC" in page
    assert "What the numbers mean" in page
    boards = dom.find("table", "board")
    assert len(boards) == len(tables) == 2
    titles = [_normal(h["text"]) for h in dom.find("h2")]
    for table, board in zip(tables, boards):
        assert table.title in titles
        assert len(dom.find("tr", inside=dom.find("tbody", inside=board)[0])) == len(table.rows)


def test_mean_std_best_checks_and_schedule(page, tables):
    dom = Dom(page)
    mobile, resnet = dom.find("table", "board")
    strong = [_normal(s["text"]) for s in dom.find("strong", inside=resnet)]
    # best per column: FGSM/PGD/PGD WC/AA/AA WC dgad (mean of two seeds), then clean and
    # clean WC rslad, in row order
    assert strong == ["61.00", "56.00", "44.00", "53.00", "41.00", "85.00", "73.00"]
    strong = [_normal(s["text"]) for s in dom.find("strong", inside=mobile)]
    assert strong == ["55.00", "50.00", "38.00", "79.00", "67.00"]  # dgad FGSM, PGD; trades clean
    rows = dom.find("tr", inside=dom.find("tbody", inside=resnet)[0])
    texts = [_normal(r["text"]) for r in rows]
    assert [t.split()[1] for t in texts] == ["dgad", "rslad", "pgd-at"]  # ranked by AA
    assert "83.00 ± 1.41" in texts[0] and "53.00 ± 1.41" in texts[0]
    assert "±" not in texts[1] and "±" not in texts[2]  # one seed: no std
    # numeric data-value on every accuracy cell (what the sort reads)
    cells = dom.find("td", "num", inside=rows[0])
    values = [float(c["attrs"]["data-value"]) for c in cells]
    assert values[:7] == pytest.approx([83.0, 71.0, 61.0, 56.0, 44.0, 53.0, 41.0])
    assert values[7] == 2  # seeds
    # the failed check is highlighted, the others read ok
    fails = dom.find("td", "fail", inside=resnet)
    assert (
        len(fails) == 1
        and "eps_sweep" in fails[0]["text"]
        and fails[0] in [e for e in dom.find("td") if any(p is rows[1] for p in e["parents"])]
    )
    assert len(dom.find("td", "ok", inside=resnet)) == 2
    # "short" visibly marked, on rslad's row only
    shorts = dom.find("span", "short", inside=resnet)
    assert len(shorts) == 1 and any(p is rows[1] for p in shorts[0]["parents"])
    # provenance: collapsible, with hashes, code, torch, device, hours
    details = dom.find("details", "provenance")
    assert len(details) == 2
    prov = _normal(details[1]["text"])
    for needle in ("0000abcd", "3f2a9c1", "2.13.0", "NVIDIA H100", "cpu", "3.00", "1.50"):
        assert needle in prov, needle
    # settings: hyperparameters away from the method's defaults (dgad's gamma 5 is its default;
    # a gamma on rslad, which has none, is shown)
    assert "Settings" in prov and "defaults" in prov and "gamma=5" in prov


def test_worst_class_columns_and_per_class_data_for_each_row(page, tables):
    """Clean/PGD/AA WC beside their averages; every row carries its per-class accuracies (mean
    over its seeds) for the bars a click draws; a row stored without them carries none."""
    dom = Dom(page)
    mobile, resnet = dom.find("table", "board")
    heads = [_normal(th["text"]) for th in dom.find("th", inside=resnet)]
    assert heads[2:9] == ["Clean", "Clean WC", "FGSM", "PGD", "PGD WC", "AA", "AA WC"]
    want = {  # resnet18: dgad's two seeds averaged per class, then rslad, pgd-at
        "dgad": {"clean": [71.0, 89.0, 89.0], "pgd10": [44.0, 62.0, 62.0],
                 "autoattack": [41.0, 59.0, 59.0]},
        "rslad": {"clean": [73.0, 91.0, 91.0], "pgd10": [42.0, 60.0, 60.0],
                  "autoattack": [38.0, 56.0, 56.0]},
        "pgd-at": {"clean": [68.0, 86.0, 86.0], "pgd10": [41.0, 59.0, 59.0],
                   "autoattack": [35.0, 53.0, 53.0]},
    }  # fmt: skip
    rows = dom.find("tr", inside=dom.find("tbody", inside=resnet)[0])
    got = {r["attrs"]["data-name"]: json.loads(r["attrs"]["data-per-class"]) for r in rows}
    assert got.keys() == want.keys()
    for name, data in want.items():
        for attack, values in data.items():
            assert got[name][attack] == pytest.approx(values)
    rows = dom.find("tr", inside=dom.find("tbody", inside=mobile)[0])
    got = {r["attrs"]["data-name"]: json.loads(r["attrs"]["data-per-class"]) for r in rows}
    assert got[XSS] == {}  # stored without per-class accuracies
    assert got["trades"] == {"clean": [67.0, 85.0, 85.0], "pgd10": [36.0, 54.0, 54.0]}  # rounded
    # the XSS row reads — in its WC cells, and a figure per table awaits the bars
    xss = next(r for r in rows if r["attrs"]["data-name"] == XSS)
    assert [_normal(td["text"]) for td in dom.find("td", "num", inside=xss)][:5] == [
        "78.00", "—", "50.00", "45.00", "—"]  # fmt: skip
    figures = dom.find("figure", "classes")
    assert len(figures) == 2 and json.loads(figures[1]["attrs"]["data-classes"]) == [
        "0 airplane", "1 automobile", "2 bird"]  # fmt: skip
    assert all(r["attrs"].get("tabindex") == "0" for r in dom.find("tr", "has-classes"))


def test_names_from_configs_are_escaped(page):
    assert XSS not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<img" not in page and "&lt;img src=x" in page
    dom = Dom(page)
    scripts = dom.find("script")
    assert len(scripts) == 2 and not any("alert" in s["text"] for s in scripts)
    methods = [_normal(td["text"]) for td in dom.find("td", "method")]
    assert XSS in methods  # shows as text, once parsed
    labels = [_normal(t["text"]) for t in dom.find("text", "label")]
    assert XSS in labels


def test_scatter_plot_per_table(page, tables):
    dom = Dom(page)
    svgs = dom.find("svg", "scatter")
    assert len(svgs) == len(tables)
    for table, svg in zip(tables, svgs):
        circles = dom.find("circle", "point", inside=svg)
        assert len(circles) == len(table.rows) == int(svg["attrs"]["data-points"])
        labels = sorted(_normal(t["text"]) for t in dom.find("text", "label", inside=svg))
        assert labels == sorted(r.method for r in table.rows)
        assert len(dom.find("text", "tick-label", inside=svg)) >= 6
        assert svg["attrs"]["data-x"] == "clean"
    mobile, resnet = svgs
    axis = [_normal(t["text"]) for t in dom.find("text", "axis-label", inside=resnet)]
    assert axis == ["Clean accuracy (%)", "AA accuracy (%)"]
    axis = [_normal(t["text"]) for t in dom.find("text", "axis-label", inside=mobile)]
    assert axis == ["Clean accuracy (%)", "PGD accuracy (%)"]  # no AutoAttack run
    # error bars only for dgad's two seeds: a bar and two caps per axis
    assert len(dom.find("line", "err", inside=resnet)) == 6
    assert not dom.find("line", "err", inside=mobile)


def test_plot_axes_follow_the_ranking_order():
    def table(columns):
        row = Row("m", ["r"], dict.fromkeys(columns, 50.0), {}, [], "full", {})
        return Table("d", "t", "s", columns, [row])

    assert plot_axes(table(["clean", "fgsm", "pgd10", "autoattack", "worst_case"])) == (
        "clean",
        "autoattack",
    )
    assert plot_axes(table(["clean", "fgsm", "pgd10", "worst_case"])) == ("clean", "worst_case")
    assert plot_axes(table(["clean", "fgsm", "pgd10"])) == ("clean", "pgd10")
    assert plot_axes(table(["clean", "fgsm"])) == ("clean", "fgsm")
    assert plot_axes(table(["clean"])) is None
    assert plot_axes(table(["pgd10"])) is None
    page = render_html([table(["pgd10"])], "g")
    assert "No plot" in page and "<svg" not in page


def test_threat_model_and_the_teachers_own_accuracy(page):
    dom = Dom(page)
    about = _normal(dom.find("section", "about")[0]["text"])
    assert "Threat model: L∞, ε = 8/255" in about
    contexts = [_pairs(dom, d) for d in dom.find("dl", "context")]
    assert contexts == 2 * [
        [
            ("Threat model", "L∞, ε = 8/255"),
            ("Teacher", f"wrn34-10 (wrn34-10, RobustBench {RB}): Clean 84.92, AA 53.94"),
        ]
    ]


def test_a_teacher_without_numbers_says_so():
    row = Row("dgad", ["r"], {"clean": 80.0, "pgd10": 50.0}, {}, [], "full", {}, label="dgad")
    teacher = Teacher("t1", "wrn34-10", "checkpoint sha256 0123abcd")
    table = Table("cifar10", "t1", "resnet18", ["clean", "pgd10"], [row], {}, [teacher])
    dom = Dom(render_html([table], "g"))
    (context,) = [_pairs(dom, d) for d in dom.find("dl", "context")]
    assert context == [
        ("Threat model", "not recorded"),
        ("Teacher", "t1 (wrn34-10, checkpoint sha256 0123abcd): not evaluated"),
    ]


def rows_of(table: Table) -> Table:
    from harness.publishing.leaderboard import rank_rows

    rank_rows(table.columns, table.rows)
    return table


def test_most_robust_and_the_plot_use_the_column_every_row_has():
    """AutoAttack on one row only: ranked, summed up and plotted by PGD, every row a point."""

    def row(method, **mean):
        return Row(method, [method], mean, {}, [], "full", {}, label=method)

    table = rows_of(
        Table(
            "cifar10",
            "t",
            "resnet18",
            ["clean", "pgd10", "autoattack"],
            [
                row("dgad", clean=80.0, pgd10=50.0, autoattack=45.0),
                row("trades", clean=85.0, pgd10=56.0),
                row("ard", clean=84.0, pgd10=52.0),
            ],
        )
    )
    dom = Dom(render_html([table], "g"))
    (svg,) = dom.find("svg", "scatter")
    assert (svg["attrs"]["data-y"], svg["attrs"]["data-points"]) == ("pgd10", "3")
    (facts,) = [dict(_pairs(dom, d)) for d in dom.find("dl", inside=dom.find("div", "facts")[0])]
    assert facts["Most robust"] == "trades (PGD 56.00)"
    assert facts["Ranking"].startswith("Ranked by PGD, the strongest attack every row")
    names = [_normal(td["text"]) for td in dom.find("td", "method")]
    assert names == ["trades †", "ard †", "dgad"]  # † not evaluated with AA


def clustered(n: int = 10) -> Table:
    """Ten configurations within a fraction of a point of each other: labels must make room."""
    rows = []
    for i in range(n):
        label = f"dgad [gamma={i + 1}]" if i % 2 else f"method-{i} (short: 1/3 ep)"
        mean = {"clean": 80.0 + 0.05 * i, "pgd10": 50.0 + 0.04 * (i % 3)}
        rows.append(Row(f"m{i}", [f"r{i}"], mean, {}, [], "full", {}, label=label))
    return rows_of(Table("cifar10", "t", "resnet18", ["clean", "pgd10"], rows))


def _svg_items(svg_text: str) -> tuple[list, list, tuple[float, float]]:
    """Label boxes (as a 12 px bold sans font draws them, roughly) and point boxes of an SVG."""
    dom = Dom(svg_text)
    (svg,) = dom.find("svg")
    _, _, w, h = (float(v) for v in svg["attrs"]["viewbox"].split())
    labels = []
    for t in dom.find("text", "label"):
        a = t["attrs"]
        width = 7.0 * len(t["text"])
        x, y = float(a["x"]), float(a["y"])
        x0 = {"start": x, "middle": x - width / 2, "end": x - width}[a.get("text-anchor", "start")]
        labels.append((t["text"], (x0, y - 10, x0 + width, y + 3)))
    points = []
    for c in dom.find("circle", "point"):
        cx, cy, r = (float(c["attrs"][k]) for k in ("cx", "cy", "r"))
        points.append((c["attrs"]["data-method"], (cx - r, cy - r, cx + r, cy + r)))
    return labels, points, (w, h)


def _overlaps(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def test_plot_labels_do_not_overlap():
    table = clustered()
    labels, points, (w, h) = _svg_items(str(scatter_svg(table, {}, "p")))
    assert sorted(text for text, _ in labels) == sorted(r.label for r in table.rows)
    for i, (text, box) in enumerate(labels):
        assert box[0] >= 0 and box[1] >= 0 and box[2] <= w and box[3] <= h, text
        for other, box2 in labels[i + 1 :]:
            assert not _overlaps(box, box2), (text, other)
        for method, dot in points:
            assert not _overlaps(box, dot), (text, method)


def test_empty_leaderboard():
    page = render_html([], "nothing")
    assert "No completed runs yet." in page and "<table" not in page


def test_cli_writes_the_page(store, tmp_path):
    from harness.cli import main

    grid = tmp_path / f"{GRID}.toml"
    grid.write_text('dataset = "cifar10"\n')
    out = tmp_path / "board.html"
    try:
        main(["leaderboard", "--grid", str(grid), "--store", str(store.root),
              "--format", "html", "--output", str(out)])  # fmt: skip
    except SystemExit as exc:
        assert exc.code in (0, None)
    text = out.read_text()
    assert text.startswith("<!doctype html>") and text.count('<table class="board"') == 2


# -- in a real browser ----------------------------------------------------------------------------
def run_chromium(binary: str, tmp_path: Path, target: Path, *args: str):
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    cmd = [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--disable-dev-shm-usage",
        "--mute-audio",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=3000",
        "--window-size=1400,1000",
        *args,
        target.as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    return proc


def test_browser_sorts_plots_and_logs_no_error(chromium, tables, tmp_path):
    target = tmp_path / "board.html"
    target.write_text(render_html(tables, GRID, generated=WHEN, self_test=True))
    proc = run_chromium(chromium, tmp_path, target, "--dump-dom")
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom_text = proc.stdout
    match = re.search(r'<body[^>]*\sdata-selftest="([^"]*)"', dom_text)
    assert match, f"self-test did not run:\n{proc.stderr[-2000:]}"
    assert match.group(1) == "ok", match.group(1)
    assert "Uncaught" not in proc.stderr, proc.stderr[-2000:]
    assert "Content Security Policy" not in proc.stderr, proc.stderr[-2000:]
    dom = Dom(dom_text)
    svgs = dom.find("svg", "scatter")
    assert [len(dom.find("circle", "point", inside=s)) for s in svgs] == [
        len(t.rows) for t in tables
    ]
    # the self-test leaves each table sorted by its ranking again, as served
    for board, table in zip(dom.find("table", "board"), tables):
        names = [_normal(td["text"]) for td in dom.find("td", "method", inside=board)]
        assert names == [r.method for r in table.rows]


def test_browser_would_report_an_uncaught_error(chromium, tmp_path):
    """The stderr check above can fail: a page that throws shows "Uncaught" there."""
    target = tmp_path / "broken.html"
    target.write_text("<!doctype html><title>x</title><script>throw new Error('boom')</script>")
    proc = run_chromium(chromium, tmp_path, target, "--dump-dom")
    assert "Uncaught" in proc.stderr and "boom" in proc.stderr


def test_browser_blocks_scripts_the_page_did_not_bring(chromium, tables, tmp_path):
    """Defence in depth: the CSP admits only the page's own scripts, by hash."""
    target = tmp_path / "board.html"
    page = render_html(tables, GRID, generated=WHEN, self_test=True)
    injected = '<script>document.body.setAttribute("data-injected", "ran")</script>'
    target.write_text(page.replace("<footer", injected + "<footer", 1))
    proc = run_chromium(chromium, tmp_path, target, "--dump-dom")
    body = re.search(r"<body[^>]*>", proc.stdout)
    assert body and 'data-selftest="' in body.group(0), proc.stderr[-2000:]
    assert "data-injected" not in body.group(0)
    assert "Content Security Policy" in proc.stderr


def test_browser_screenshot(chromium, tables, tmp_path):
    target = tmp_path / "board.html"
    target.write_text(render_html(tables, GRID, generated=WHEN))
    shot = tmp_path / "page.png"
    proc = run_chromium(chromium, tmp_path, target, f"--screenshot={shot}")
    assert proc.returncode == 0 and shot.exists(), proc.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1400, 1000)
    assert len(data) > 30_000  # a laid-out page, not a blank one


# -- layout, measured in the browser ---------------------------------------------------------------
#: Injected in place of the page's CSP (so it may run): the geometry the tests check, as JSON.
MEASURE = """<script>
window.addEventListener("load", function () { setTimeout(function () {
  var out = { tables: [], svgs: [] };
  document.querySelectorAll(".table-scroll").forEach(function (s) {
    var t = s.querySelector("table.board");
    if (!t) return;
    out.tables.push({
      table: t.scrollWidth, box: s.clientWidth, box_right: s.getBoundingClientRect().right,
      last_right: t.querySelector("thead th:last-child").getBoundingClientRect().right,
      window: document.documentElement.clientWidth
    });
  });
  document.querySelectorAll("svg.scatter").forEach(function (svg) {
    var items = [];
    svg.querySelectorAll("text.label, circle.point").forEach(function (e) {
      var b = e.getBBox();
      items.push({ kind: e.tagName, name: e.textContent || e.getAttribute("data-method"),
                   box: [b.x, b.y, b.x + b.width, b.y + b.height] });
    });
    out.svgs.push(items);
  });
  document.body.setAttribute("data-measure", JSON.stringify(out));
}, 50); });
</script>"""

WIDE_COLUMNS = [
    "clean", "worst_class/clean", "fgsm", "pgd10", "worst_class/pgd10", "cw2", "autoattack",
    "worst_class/autoattack",
    *(f"transfer/{s}/{a}" for s in ("resnet34", "vgg16_bn") for a in ("fgsm", "pgd10", "jsma")),
    "pgd50", "worst_case",
]  # fmt: skip


def wide() -> Table:
    """The widest table a paper grid makes (Table 7's white-box and transfer columns, the
    worst-class columns, Worst) with an extra attack, two-seed stds, long labels and every
    check failed on one row."""
    rows = []
    labels = [
        "dgad (short: 1/3 ep) [gamma=10, lr=0.05, +2]",
        "dgad [gamma=5, lr=0.1, pcr=true]",
        "adaad",
        "rslad",
        "trades",
        "pgd-at",
    ]
    for i, label in enumerate(labels):
        mean = {c: 40.0 + i + 0.01 * j for j, c in enumerate(WIDE_COLUMNS)}
        std = dict.fromkeys(WIDE_COLUMNS, 1.23)
        flags = ["batch_invariant", "eps_sweep", "in_threat_model", "ordering"] if i == 2 else []
        rows.append(
            Row(label.split()[0], [f"r{i}", f"q{i}"], mean, std, flags, "short", {}, label=label)
        )
    teacher = Teacher("wrn34-10", "wrn34-10", f"RobustBench {RB}", {"clean": 84.9, "pgd10": 55.1})
    threat = {"norm": "L∞", "eps": "8/255"}
    return rows_of(Table("cifar10", "wrn34-10", "resnet18", WIDE_COLUMNS, rows, threat, [teacher]))


def measure(chromium: str, tmp_path: Path, tables: list[Table]) -> dict:
    page = render_html(tables, GRID, generated=WHEN)
    page = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", page)
    target = tmp_path / "measure.html"
    target.write_text(page.replace("</body>", MEASURE + "</body>"))
    proc = run_chromium(chromium, tmp_path, target, "--dump-dom")
    found = re.search(r'data-measure="([^"]*)"', proc.stdout)
    assert found, proc.stderr[-2000:]
    return json.loads(unescape(found.group(1)))


def test_browser_table_fits_1400px_and_plot_labels_do_not_overlap(chromium, tmp_path):
    data = measure(chromium, tmp_path, [wide(), clustered()])
    assert len(data["tables"]) == 2
    for t in data["tables"]:  # nothing scrolls sideways, the Checks column is not cut off
        assert t["table"] <= t["box"] + 1, t
        assert t["last_right"] <= t["box_right"] + 1 and t["box_right"] <= t["window"] + 1, t
    for items in data["svgs"]:
        labels = [i for i in items if i["kind"] == "text"]
        points = [i for i in items if i["kind"] == "circle"]
        assert len(labels) == len(points) > 0
        for n, a in enumerate(labels):
            for b in labels[n + 1 :] + points:
                assert not _overlaps(a["box"], b["box"]), (a, b)
