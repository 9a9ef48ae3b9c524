"""The app in a real browser (Debian's chromium driven by playwright): keyboard labelling, grid, undo, resume."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import playwright.sync_api as playwright_api
import pytest

from labeling import LabelStore, load_catalog
from labeling.app import LabelingApp
from labeling.users import Users

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
if not Path(CHROMIUM).exists():
    pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium (apt-get install chromium)",
                pytrace=False)

ITEM = "#item-id textarea, #item-id input"


def _item_id(page) -> str:
    return page.locator(ITEM).first.input_value()


def _wait_item_change(page, old: str) -> str:
    page.wait_for_function(
        "([sel, old]) => { const el = document.querySelector(sel); return el && el.value && el.value !== old; }",
        arg=[ITEM, old], timeout=20000)
    return _item_id(page)


def test_keyboard_grid_undo_reload(tmp_path: Path, faces: Path, server_factory) -> None:
    db = tmp_path / "labels.sqlite"
    store = LabelStore(db)
    app = LabelingApp(store, load_catalog(faces, progress=False), annotator="alice", suggestions=False,
                      progress=False)
    server = server_factory(app)
    keys = [("2", "4", "5", "8", "9"), ("1", "3", "6", "7", "0"), ("2", "3", "5", "7", "9")]
    values = [{"gender": 1, "age_group": 1, "glasses": 0, "pose": 1, "teeth": 0},
              {"gender": 0, "age_group": 0, "glasses": 1, "pose": 0, "teeth": 1},
              {"gender": 1, "age_group": 0, "glasses": 0, "pose": 0, "teeth": 0}]
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(server.url, wait_until="load")
            page.wait_for_function(f"() => {{ const el = document.querySelector('{ITEM}'); "
                                   "return el && el.value; }", timeout=30000)
            page.locator("body").click(position={"x": 5, "y": 5})
            labelled = []
            for presses in keys:  # three faces, keyboard only: a key per value, Enter saves and advances
                current = _item_id(page)
                for key in presses:
                    page.keyboard.press(key)
                page.wait_for_function(  # the last key's radio is checked before saving
                    "() => document.querySelectorAll('#attr-teeth input[type=radio]:checked').length === 1")
                page.keyboard.press("Enter")
                labelled.append(current)
                _wait_item_change(page, current)
            assert len(set(labelled)) == 3

            page.keyboard.press("u")  # undo: the third face comes back
            back = _wait_item_change(page, _item_id(page))
            assert back == labelled[2]
            assert "mine 2 / 20" in page.locator("#progress").inner_text()

            page.get_by_role("tab", name="Grid").click()  # one page of one attribute: gender (the first)
            thumbs = page.locator("#grid img")
            thumbs.first.wait_for(timeout=20000)
            page.wait_for_function("() => document.querySelectorAll('#grid img').length === 18")
            expected = " ".join("female" if k in (1, 4) else "male" for k in range(18))
            for index in (1, 4):  # toggle two faces to "female", one click at a time
                thumbs.nth(index).click()
                page.wait_for_function("(i) => document.querySelector('#grid').innerText.split(/\\s+/)"
                                       ".filter(w => w === 'female').length === i", arg=1 + (index == 4))
            page.wait_for_function("(e) => document.querySelector('#grid').innerText.trim().split(/\\s+/)"
                                   ".join(' ') === e", arg=expected)
            page.get_by_role("button", name="Save page").click()
            page.wait_for_function("() => document.querySelector('#grid-status').innerText.includes('saved 18')")
            page_items = app.grid_page("alice", "gender")  # next page: nothing left for gender
            assert page_items == []

            page.reload(wait_until="load")  # progress and position survive a reload
            page.wait_for_function(f"() => {{ const el = document.querySelector('{ITEM}'); "
                                   "return el && el.value; }", timeout=30000)
            assert _item_id(page) == labelled[2]
            assert "mine 2 / 20" in page.locator("#progress").inner_text()
        finally:
            browser.close()

    rows = sqlite3.connect(db).execute(
        "SELECT l.save_id, l.item_id, l.annotator, l.attribute, l.value, s.undone, s.kind "
        "FROM labels l JOIN saves s ON s.save_id = l.save_id ORDER BY l.id").fetchall()
    per_image = [r for r in rows if r[0] in {rows[0][0], rows[5][0], rows[10][0]}]
    assert [(r[1], r[3], r[4], r[5]) for r in per_image] == [
        (item, name, value, int(k == 2)) for k, item in enumerate(labelled) for name, value in values[k].items()]
    grid = rows[15:]
    order = [i for i in store.items() if i not in labelled[:2]]
    assert [(r[1], r[3]) for r in grid] == [(i, "gender") for i in order]
    assert [r[4] for r in grid] == [int(k in (1, 4)) for k in range(18)]
    assert {r[0] for r in grid} == {grid[0][0]} and all(r[2] == "alice" and r[5] == 0 for r in rows[:10] + grid)
    assert len(rows) == 15 + 18


def test_login_names_the_annotator(tmp_path: Path, faces: Path, server_factory) -> None:
    """With users configured the app asks for a login, and labels are saved under that name."""
    db = tmp_path / "labels.sqlite"
    app = LabelingApp(LabelStore(db), load_catalog(faces, progress=False), users=Users.from_passwords({"zoe": "pw-1"}),
                      suggestions=False, progress=False)
    server = server_factory(app)
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(server.url, wait_until="load")
            page.locator("input[type=password]").wait_for(timeout=20000)
            page.locator("input").first.fill("zoe")
            page.locator("input[type=password]").fill("wrong")
            page.keyboard.press("Enter")
            page.wait_for_timeout(500)
            assert page.locator(ITEM).count() == 0  # still at the login
            page.locator("input").first.fill("zoe")
            page.locator("input[type=password]").fill("pw-1")
            page.keyboard.press("Enter")
            page.wait_for_function(f"() => {{ const el = document.querySelector('{ITEM}'); "
                                   "return el && el.value; }", timeout=30000)
            assert page.locator("#progress").inner_text().startswith("zoe")
            first = _item_id(page)
            page.locator("body").click(position={"x": 5, "y": 5})
            for key in ("1", "3", "5", "7", "9"):
                page.keyboard.press(key)
            page.wait_for_function(
                "() => document.querySelectorAll('#attr-teeth input[type=radio]:checked').length === 1")
            page.keyboard.press("Enter")
            _wait_item_change(page, first)
        finally:
            browser.close()
    assert LabelStore(db).current(first, "zoe") == {"gender": 0, "age_group": 0, "glasses": 0, "pose": 0, "teeth": 0}


def test_machine_suggestions_cant_tell_and_card(tmp_path: Path, faces: Path, server_factory) -> None:
    """Offline machine labels arrive pre-selected for all five attributes; the can't-tell keys work in both modes;
    the person's answers are theirs, the suggestions they saw are recorded, and the export's card counts labels
    from people and from each model."""
    from labeling import compute_stats, export_dataset
    from labeling.autolabel import source_names
    from labeling.provenance import is_model

    db = tmp_path / "labels.sqlite"
    store = LabelStore(db)
    catalog = load_catalog(faces, progress=False)
    app = LabelingApp(store, catalog, annotator="alice", progress=False)
    assert not [n for n in app.notices if n.startswith("machine suggestions off")]
    server = server_factory(app)
    names = [a.name for a in store.attributes]
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(server.url, wait_until="load")
            page.wait_for_function(f"() => {{ const el = document.querySelector('{ITEM}'); "
                                   "return el && el.value; }", timeout=60000)
            first = _item_id(page)
            page.wait_for_function("(names) => names.every(n => document.querySelectorAll("
                                   "'#attr-' + n + ' input[type=radio]:checked').length === 1)", arg=names)
            suggested = app.suggestions(first)
            assert set(suggested) == set(names) and all(is_model(s.source) for s in suggested.values())
            for name in names:  # the pre-selected radio is the model's answer
                checked = page.locator(f"#attr-{name} input[type=radio]:checked").input_value()
                assert int(checked) == suggested[name].value
            page.locator("body").click(position={"x": 5, "y": 5})
            page.keyboard.press("q")  # gender: can't tell
            page.wait_for_function("() => document.querySelector('#attr-gender input[type=radio]:checked')"
                                   ".value === '-1'")
            page.keyboard.press("Enter")
            _wait_item_change(page, first)

            page.get_by_role("tab", name="Grid").click()  # gender page: x on a focused face = can't tell
            thumbs = page.locator("#grid .thumbnail-item")
            thumbs.first.wait_for(timeout=60000)
            thumbs.nth(2).focus()
            page.keyboard.press("x")
            page.wait_for_function("() => document.querySelector('#grid').innerText.includes('cant_tell')",
                                   timeout=20000)
            page.get_by_role("button", name="Save page").click()
            page.wait_for_function("() => document.querySelector('#grid-status').innerText.includes('saved 19')",
                                   timeout=30000)
        finally:
            browser.close()

    person = {(lab.item_id, lab.attribute): lab.value for lab in store.labels("alice")}
    assert person[(first, "gender")] == -1
    assert all(person[(first, n)] == suggested[n].value for n in names[1:])  # kept as suggested
    grid_items = [i for i in store.items() if i != first]
    assert person[(grid_items[2], "gender")] == -1
    shown = store.shown()
    assert {(s.item_id, s.attribute) for s in shown if s.item_id == first} == {(first, n) for n in names}
    assert all(is_model(s.source) for s in shown)
    stats_changes = compute_stats(store).suggestion_changes["gender"]
    assert stats_changes["shown"] == 20 and stats_changes["changed"] >= 2

    out = tmp_path / "export"
    export_dataset(store, catalog, out, progress=False)
    card = (out / "README.md").read_text()
    people = sum(1 for (_, _), v in person.items() if v != -1)
    assert f"- labels from people: {people} " in card
    for source in set(source_names().values()):
        assert f"- labels from {source}: " in card
    assert "annotations_creators:\n- expert-generated\n- machine-generated" in card
