"""Saved conversations: append-only JSONL, crash-tolerant, listed, renamed, exported, deleted."""

from __future__ import annotations

import json

import pytest

from optiq_tui.engine.conversations import ConversationStore
from optiq_tui.progress import OptiqError
from optiq_tui.settings import paths


@pytest.fixture
def store() -> ConversationStore:
    return ConversationStore()


def test_messages_are_on_disk_as_soon_as_appended(store):
    cid = store.create(model="tiny", title="Capitals")
    store.append(cid, "user", "Capital of France?")
    store.append(cid, "assistant", "Paris.", reasoning="Easy one.", stats={"gen_tokens": 3})
    # A second store (another process, after a crash) sees everything.
    conv = ConversationStore(paths().conversations).load(cid)
    assert [(m.role, m.content) for m in conv.messages] == [("user", "Capital of France?"), ("assistant", "Paris.")]
    assert conv.messages[1].reasoning == "Easy one." and conv.messages[1].stats == {"gen_tokens": 3}
    assert conv.title == "Capitals" and conv.model == "tiny"
    lines = (paths().conversations / f"{cid}.jsonl").read_text().splitlines()
    assert len(lines) == 3 and all(json.loads(line) for line in lines)


def test_list_shows_title_model_updated_and_count(store):
    a = store.create(model="m1", title="first")
    store.append(a, "user", "hi")
    b = store.create(model="m2", title="second")
    for text in ("q", "a", "q2"):
        store.append(b, "user", text)
    items = {c.id: c for c in store.list()}
    assert items[a].n_messages == 1 and items[a].model == "m1" and items[a].title == "first"
    assert items[b].n_messages == 3 and items[b].updated >= items[b].created


def test_rename_is_appended_not_rewritten(store):
    cid = store.create(model="m", title="old")
    store.append(cid, "user", "hello")
    before = (paths().conversations / f"{cid}.jsonl").read_bytes()
    store.rename(cid, "new title")
    after = (paths().conversations / f"{cid}.jsonl").read_bytes()
    assert after.startswith(before)
    assert store.load(cid).title == "new title"


def test_a_torn_last_line_is_tolerated_and_appending_continues(store):
    cid = store.create(model="m", title="t")
    store.append(cid, "user", "kept")
    path = paths().conversations / f"{cid}.jsonl"
    with open(path, "ab") as f:
        f.write(b'{"type": "message", "role": "assistant", "content": "half wri')
    assert [m.content for m in store.load(cid).messages] == ["kept"]
    store.append(cid, "assistant", "after the crash")
    assert [m.content for m in store.load(cid).messages] == ["kept", "after the crash"]


def test_pop_event_takes_back_the_last_exchange(store):
    cid = store.create(model="m")
    for role, text in [("user", "q1"), ("assistant", "a1"), ("user", "q2"), ("assistant", "a2")]:
        store.append(cid, role, text)
    store.append(cid, "pop", "")
    store.append(cid, "user", "q2 edited")
    assert [m.content for m in store.load(cid).messages] == ["q1", "a1", "q2 edited"]


def test_export_markdown_with_reasoning_quoted(store, tmp_path):
    cid = store.create(model="tiny", title="Math")
    store.append(cid, "user", "12*7?")
    store.append(cid, "assistant", "84", reasoning="12*7\n= 84")
    target = store.export_markdown(cid, tmp_path / "math.md")
    text = target.read_text()
    assert text.startswith("# Math")
    assert "## You\n\n12*7?" in text
    assert "> **Reasoning**" in text and "> 12*7\n> = 84" in text
    assert "## tiny\n" in text and text.rstrip().endswith("84")


def test_delete_and_bad_ids(store):
    cid = store.create(model="m")
    store.delete(cid)
    assert store.list() == []
    with pytest.raises(OptiqError, match="no conversation"):
        store.load(cid)
    with pytest.raises(OptiqError, match="not a conversation id"):
        store.load("../../etc/passwd")
