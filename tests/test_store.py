"""The snapshot store under artifacts and checkpoints: one rename commits, readers see one whole
snapshot, writers exclude each other, a kill at any step leaves the old or the new, leftovers go.

Crash tests kill a forked child with SIGKILL at a chosen step of a save: an audit hook
(``sys.addaudithook``) counts the file-system events of the save (every open for writing, rename,
removal, directory creation) and the child kills itself at event N, for every N from 1 to the
last. Concurrency tests run real processes against one path.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import collabemb as ce
from collabemb.store import LOCK_FILE, POINTER_FILE, StoreLockedError, open_snapshot, write_snapshot, writer_lock
from collabemb.train import read_checkpoint_state

from conftest import planted_ratings, snapshot_of

FORK = multiprocessing.get_context("fork")
PAIRS = ([1, 2, 3, 4, 999], [1, 5, 9, 12, 999])
SMALL = {"n_factors": 4, "threads": 1, "progress": False}
_WRITE_EVENTS = {"os.rename", "os.remove", "os.rmdir", "os.mkdir", "shutil.rmtree", "os.truncate"}


def _predictions(fitted) -> np.ndarray:
    return fitted.predict(*PAIRS)["prediction"].to_numpy()


@pytest.fixture(scope="module")
def two_models():
    frame = planted_ratings(n_users=40, n_items=30, per_user=12)
    a = ce.fit(frame, epochs=2, seed=0, **SMALL)
    b = ce.fit(frame, epochs=2, seed=1, **SMALL)
    ce.build_index(b, index_type="hnsw", threads=1)  # the new artifact has more files than the old
    return a, b


def _is_write(event: str, args: tuple) -> bool:
    if event in _WRITE_EVENTS:
        return True
    if event == "open" and len(args) >= 3:
        mode, flags = args[1], args[2]
        if isinstance(mode, str):
            return any(c in mode for c in "wax+")
        return isinstance(flags, int) and bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
    return False


def _run_until_event(action, kill_at: int | None, report, signum: int = signal.SIGKILL) -> None:
    """In a forked child: run ``action`` counting its write events; send itself ``signum`` at event ``kill_at``."""
    count = 0

    def hook(event, args):
        nonlocal count
        if _is_write(event, args):
            count += 1
            if kill_at is not None and count == kill_at:
                os.kill(os.getpid(), signum)

    sys.addaudithook(hook)
    action()
    report.send(count)


def _count_or_kill(action, kill_at: int | None, signum: int = signal.SIGKILL) -> tuple[int | None, int]:
    """Run ``action`` in a forked child; ``(events counted or None if killed, exit code)``."""
    receive, send = FORK.Pipe(duplex=False)
    child = FORK.Process(target=_run_until_event, args=(action, kill_at, send, signum))
    child.start()
    send.close()
    child.join(60)
    try:
        count = receive.recv()
    except EOFError:  # killed before it reported
        count = None
    return count, child.exitcode


def _leftovers(store: Path) -> list[str]:
    return sorted(p.name for p in store.iterdir() if p.name not in (POINTER_FILE, LOCK_FILE) and not p.name.startswith("snap-"))


def test_a_save_commits_with_one_rename_and_leaves_one_snapshot(two_models, tmp_path):
    a, b = two_models
    ce.save_model(a, tmp_path / "art")
    first = snapshot_of(tmp_path / "art")
    ce.save_model(b, tmp_path / "art")
    second = snapshot_of(tmp_path / "art")
    assert first != second and not first.exists()
    assert sorted(p.name for p in (tmp_path / "art").iterdir()) == [LOCK_FILE, POINTER_FILE, second.name]
    np.testing.assert_array_equal(_predictions(ce.load_model(tmp_path / "art")), _predictions(b))


@pytest.mark.parametrize("target", ["save", "checkpoint"])
def test_sigkill_at_every_step_of_a_save_leaves_the_complete_old_or_the_complete_new(two_models, tmp_path, target):
    a, b = two_models
    store = tmp_path / "art"
    ce.save_model(a, store)
    old, new = _predictions(a), _predictions(b)
    if target == "save":
        action = lambda: ce.save_model(b, store)  # noqa: E731
    else:
        from collabemb.train import _write_checkpoint

        class _State:  # what _write_checkpoint reads of an engine
            def __init__(self):
                self.state = {"u_acc": torch.zeros(3)}

        best = {"weights": None, "epoch": 1, "valid": float("inf"), "bad_epochs": 0}
        action = lambda: _write_checkpoint(store, b, _State(), best=best, fingerprint=None)  # noqa: E731
    total, code = _count_or_kill(action, None)
    assert code == 0 and total is not None and total >= 8, (code, total)
    outcomes = []
    for kill_at in range(1, total + 1):
        ce.save_model(a, store)  # the old artifact, whole, before every try
        _, code = _count_or_kill(action, kill_at)
        assert code == -signal.SIGKILL
        got = _predictions(ce.load_model(store))
        assert np.array_equal(got, old) or np.array_equal(got, new), f"mixed artifact after a kill at event {kill_at}"
        outcomes.append("new" if np.array_equal(got, new) else "old")
    assert outcomes[0] == "old" and outcomes[-1] == "new" and outcomes == sorted(outcomes, key=["old", "new"].index)
    ce.save_model(a, store)  # the next writer clears what the killed ones left
    assert _leftovers(store) == [] and len(list(store.glob("snap-*"))) == 1


def test_ctrl_c_at_every_step_of_a_save_leaves_old_or_new_and_nothing_else(two_models, tmp_path):
    """SIGINT (Ctrl-C) while the files are written drops the new snapshot; during the commit it waits
    until the commit and the cleanup are done. Either way nothing is left over."""
    a, b = two_models
    store = tmp_path / "art"
    ce.save_model(a, store)
    old, new = _predictions(a), _predictions(b)
    total, _ = _count_or_kill(lambda: ce.save_model(b, store), None)
    outcomes = []
    for at in range(1, total + 1):
        ce.save_model(a, store)
        count, code = _count_or_kill(lambda: ce.save_model(b, store), at, signal.SIGINT)
        assert count is None and code == 1  # KeyboardInterrupt ended the child
        got = _predictions(ce.load_model(store))
        assert np.array_equal(got, old) or np.array_equal(got, new), f"mixed artifact after Ctrl-C at event {at}"
        outcomes.append("new" if np.array_equal(got, new) else "old")
        assert _leftovers(store) == [] and len(list(store.glob("snap-*"))) == 1, f"leftovers after Ctrl-C at event {at}"
    assert outcomes[0] == "old" and outcomes[-1] == "new"


def test_a_pointer_to_a_missing_snapshot_is_named(two_models, tmp_path):
    a, _ = two_models
    ce.save_model(a, tmp_path / "art")
    snap = snapshot_of(tmp_path / "art")
    (snap / "manifest.json").unlink()
    with pytest.raises(ce.ArtifactError, match=rf"CURRENT: names {snap.name}, but .*manifest.json is missing"):
        ce.load_model(tmp_path / "art")
    with pytest.raises(ce.ArtifactError, match="an empty path was given"):
        ce.save_model(a, "")


def test_a_killed_checkpoint_resumes_to_the_weights_of_an_uninterrupted_run(tmp_path):
    frame = planted_ratings(n_users=40, n_items=30, per_user=12)
    whole = ce.fit(frame, epochs=3, seed=3, **SMALL)
    ck = tmp_path / "ck"
    # kill the run in the middle of its third checkpoint write: epochs 1 and 2 are committed
    two, _ = _count_or_kill(lambda: ce.fit(frame, epochs=2, seed=3, checkpoint=tmp_path / "two", **SMALL), None)
    three, _ = _count_or_kill(lambda: ce.fit(frame, epochs=3, seed=3, checkpoint=tmp_path / "three", **SMALL), None)
    _, code = _count_or_kill(lambda: ce.fit(frame, epochs=3, seed=3, checkpoint=ck, **SMALL), two + (three - two) // 2)
    assert code == -signal.SIGKILL
    assert read_checkpoint_state(ck)["epoch"] == 2
    resumed = ce.fit(frame, epochs=3, seed=3, checkpoint=ck, resume=ck, **SMALL)
    for name in ("u_weight", "i_weight", "u_bias", "i_bias"):
        assert torch.equal(getattr(resumed.module, name).weight, getattr(whole.module, name).weight)
    assert _leftovers(ck) == [] and len(list(ck.glob("snap-*"))) == 1


def test_a_second_writer_is_refused_at_once_naming_the_first(two_models, tmp_path):
    a, _ = two_models
    ready, release = FORK.Event(), FORK.Event()

    def hold():
        with writer_lock(tmp_path / "art"):
            ready.set()
            release.wait(30)

    holder = FORK.Process(target=hold)
    holder.start()
    try:
        assert ready.wait(30)
        start = time.perf_counter()
        with pytest.raises(StoreLockedError, match=rf"another process \(pid {holder.pid}\) is writing it"):
            ce.save_model(a, tmp_path / "art")
        assert time.perf_counter() - start < 1
    finally:
        release.set()
        holder.join(30)
    ce.save_model(a, tmp_path / "art")  # free again once the first is done


def test_one_process_may_nest_the_writer_lock(two_models, tmp_path):
    a, _ = two_models
    with writer_lock(tmp_path / "art"):
        ce.save_model(a, tmp_path / "art")  # what `collabemb fit --out` does: lock first, save at the end
    assert ce.load_model(tmp_path / "art").n_factors == 4


def test_a_snapshot_a_reader_holds_survives_the_next_save_and_goes_when_the_reader_lets_go(two_models, tmp_path):
    a, b = two_models
    store = tmp_path / "art"
    ce.save_model(a, store)
    with open_snapshot(store, "artifact") as held:
        ce.save_model(b, store)
        assert held.directory.is_dir()  # a writer does not delete a snapshot in use
        assert held.read("config.json")
    assert not held.directory.exists() and len(list(store.glob("snap-*"))) == 1  # the reader let go of it last


def test_leftovers_of_killed_writers_are_removed_by_the_next_writer(two_models, tmp_path):
    a, _ = two_models
    store = tmp_path / "art"
    ce.save_model(a, store)
    (store / ".tmp-deadbeef").mkdir()
    (store / ".tmp-deadbeef" / "tensors.safetensors").write_bytes(b"half")
    (store / ".tmp-cafe-CURRENT").write_text("{")
    (store / "snap-000000-00000000").mkdir()  # an old snapshot nobody points at
    ce.save_model(a, store)
    assert _leftovers(store) == [] and len(list(store.glob("snap-*"))) == 1


def test_a_failed_write_leaves_the_store_as_it_was(tmp_path):
    store = tmp_path / "s"
    with write_snapshot(store, "artifact") as w:
        w.write("config.json", b"{}")
    before = sorted(p.name for p in store.iterdir())
    with pytest.raises(RuntimeError, match="boom"), write_snapshot(store, "artifact") as w:
        w.write("config.json", b"{}")
        raise RuntimeError("boom")
    assert sorted(p.name for p in store.iterdir()) == before
    with pytest.raises(ValueError, match="not a plain new file name"), write_snapshot(store, "artifact") as w:
        w.write("../escape", b"")


def test_an_old_flat_artifact_is_converted_by_the_next_save_without_a_moment_missing(two_models, tmp_path):
    from conftest import flatten

    a, b = two_models
    store = tmp_path / "art"
    ce.save_model(a, store)
    flatten(store)
    with pytest.warns(UserWarning, match="before artifacts carried a manifest"):
        np.testing.assert_array_equal(_predictions(ce.load_model(store)), _predictions(a))
    ce.save_model(b, store)
    assert sorted(p.name for p in store.iterdir()) == [LOCK_FILE, POINTER_FILE, snapshot_of(store).name]
    np.testing.assert_array_equal(_predictions(ce.load_model(store)), _predictions(b))


# --- readers and writers at once ------------------------------------------------------------------

CONCURRENCY_SECONDS = float(os.environ.get("COLLABEMB_CONCURRENCY_SECONDS", "20"))


def _writer(model_dir: Path, store: Path, until: float, out) -> None:
    fitted = ce.load_model(model_dir)
    saved = refused = 0
    while time.time() < until:
        try:
            ce.save_model(fitted, store)
            saved += 1
        except StoreLockedError:
            refused += 1
    out.send((saved, refused))


def _reader(store: Path, expected: list[np.ndarray], until: float, out) -> None:
    good = mixed = failed = 0
    errors: list[str] = []
    while time.time() < until:
        try:
            got = _predictions(ce.load_model(store))
        except Exception as exc:  # counted, and the first few reported
            failed += 1
            errors.append(f"{type(exc).__name__}: {exc}")
            continue
        if any(np.array_equal(got, e) for e in expected):
            good += 1
        else:
            mixed += 1
    out.send((good, mixed, failed, errors[:3]))


def test_readers_never_see_a_mixed_or_broken_artifact_while_two_writers_save(two_models, tmp_path):
    a, b = two_models
    for model, name in ((a, "a"), (b, "b")):
        ce.save_model(model, tmp_path / name)
    store = tmp_path / "shared"
    ce.save_model(a, store)
    until = time.time() + CONCURRENCY_SECONDS
    pipes, procs = [], []
    for target, args in (
        (_reader, (store, [_predictions(a), _predictions(b)], until)),
        (_writer, (tmp_path / "a", store, until)),
        (_writer, (tmp_path / "b", store, until)),
    ):
        receive, send = FORK.Pipe(duplex=False)
        procs.append(FORK.Process(target=target, args=(*args, send)))
        pipes.append(receive)
    for p in procs:
        p.start()
    results = [pipe.recv() for pipe in pipes]
    for p in procs:
        p.join(60)
    good, mixed, failed, errors = results[0]
    print("reader (good, mixed, failed):", good, mixed, failed, "writers (saved, refused):", results[1:])
    assert mixed == 0 and failed == 0, errors
    assert good > 10
    assert all(saved > 0 for saved, _ in results[1:])  # both writers got their turns; the other was refused meanwhile
    assert _leftovers(store) == [] and len(list(store.glob("snap-*"))) == 1  # readers let go of what they held


def test_an_atomic_file_never_replaces_what_is_not_a_regular_file(tmp_path):
    from collabemb.atomic import atomic_file

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="exists and is not a regular file"), atomic_file(fifo) as tmp:
        tmp.write_text("x")
    assert fifo.is_fifo() and sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]


def test_training_and_writing_are_logged_under_collabemb(tmp_path, caplog):
    import logging

    frame = planted_ratings(n_users=30, n_items=20, per_user=8)
    with caplog.at_level(logging.INFO, logger="collabemb"):
        ce.save_model(ce.fit(frame, epochs=2, **SMALL), tmp_path / "art")
    messages = [(r.name, r.getMessage()) for r in caplog.records]
    assert [name for name, m in messages if m.startswith("epoch ")] == ["collabemb.train", "collabemb.train"]
    assert any(name == "collabemb.store" and m.startswith(f"wrote artifact {tmp_path / 'art'}/snap-") for name, m in messages)
