"""``collabemb fit --distributed`` under real ``torchrun`` processes on loopback (gloo, OMP_NUM_THREADS=1).

The correspondence tested: N ranks give bit-identical tables, training losses and seen pairs to one
process's ``fit(..., threads=N)`` with the same seed, however the parquet files split the ratings.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import collabemb as ce
from collabemb.ratings_dataset import RatingsDataset, id_bytes, ids_of_bytes
from collabemb.train import read_checkpoint_state

TABLES = ("u_weight", "i_weight", "u_bias", "i_bias")
SMALL = {"n_factors": 8, "epochs": 3, "seed": 7, "unknown_frac": 0.1}


def ratings_frame(n: int, n_users: int, n_items: int, seed: int = 0, str_ids: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"user": rng.integers(1, n_users + 1, n), "item": rng.integers(1, n_items + 1, n)}).drop_duplicates()
    frame["rating"] = rng.integers(1, 6, len(frame)).astype(np.float32)
    if str_ids:
        frame["user"], frame["item"] = "u" + frame["user"].astype(str), "i-" + frame["item"].astype(str)
    return frame.reset_index(drop=True)


def write_dataset(frame: pd.DataFrame, directory: Path, sizes: list[int]) -> Path:
    """The rows of ``frame``, shuffled, into files of the given sizes (0: an empty file), hive-partitioned in two."""
    shuffled = frame.sample(frac=1.0, random_state=3).reset_index(drop=True)
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    assert bounds[-1] == len(frame)
    for k in range(len(sizes)):
        part = directory / f"half={k % 2}"
        part.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pandas(shuffled.iloc[bounds[k] : bounds[k + 1]], preserve_index=False), part / f"part-{k}.parquet")
    return directory


def torchrun(n: int, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(n), "--master-port", str(free_port())]
    command += ["-m", "collabemb", "fit", "--distributed", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def options(settings: dict) -> list[str]:
    return [part for k, v in settings.items() for part in (f"--{k.replace('_', '-')}", str(v))]


def assert_same_model(a: ce.FittedModel, b: ce.FittedModel) -> None:
    for name in TABLES:
        assert torch.equal(getattr(a.module, name).weight, getattr(b.module, name).weight), name
    assert a.history.train_rmse == b.history.train_rmse
    assert np.array_equal(a.seen_items.indptr, b.seen_items.indptr) and np.array_equal(a.seen_items.indices, b.seen_items.indices)
    assert a.users == b.users and a.items == b.items


def test_two_ranks_train_the_very_weights_of_one_process_with_two_threads(tmp_path):
    frame = ratings_frame(6000, 120, 90)
    data = write_dataset(frame, tmp_path / "data", [2500, 0, 1500, len(frame) - 4000])  # uneven, one file empty
    ratings_frame(300, 120, 90, seed=9).to_csv(tmp_path / "valid.csv", index=False)
    done = torchrun(2, str(data), "--out", str(tmp_path / "out"), "--valid", str(tmp_path / "valid.csv"), *options(SMALL))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "on 2 ranks" in done.stdout
    one = ce.fit(frame, valid=tmp_path / "valid.csv", threads=2, progress=False, **SMALL)
    got = ce.load_model(tmp_path / "out")
    assert_same_model(got, one)
    assert got.history.valid_rmse == one.history.valid_rmse
    traffic = got.history.params["bytes_sent_per_epoch"]  # by rank: the median over epochs, measured
    assert got.history.params["ranks"] == 2 and len(traffic) == 2 and min(traffic) > 0


def test_four_ranks_one_holding_no_user_with_string_ids_train_as_one_process_and_two_ranks_resume_it(tmp_path):
    frame = ratings_frame(400, 3, 60, seed=2, str_ids=True)  # 3 users over 4 ranks: a rank owns none
    data = write_dataset(frame, tmp_path / "data", [100, len(frame) - 100])
    ck = tmp_path / "ck"
    done = torchrun(4, str(data), "--out", str(tmp_path / "out"), "--checkpoint", str(ck), *options(SMALL))
    assert done.returncode == 0, done.stderr[-3000:]
    got = ce.load_model(tmp_path / "out")
    assert_same_model(got, ce.fit(frame, threads=4, progress=False, **SMALL))
    assert len(got.history.params["bytes_sent_per_epoch"]) == 4
    # another rank count takes the 4 ranks' checkpoint: same registries, same (order- and split-free) data fingerprint
    again = torchrun(2, str(data), "--out", str(tmp_path / "again"), "--resume", str(ck), *options(SMALL))
    assert again.returncode == 0, again.stderr[-3000:]
    assert_same_model(ce.load_model(tmp_path / "again"), got)


def test_resume_on_other_ratings_is_refused_and_the_fingerprint_ignores_order_and_split(tmp_path):
    import torch.distributed as dist

    from collabemb.distributed import _fingerprint, fit_distributed
    from collabemb.engines.dsgd import Comms

    frame = ratings_frame(2000, 50, 40, seed=5)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)  # one rank, in this process
    try:
        fit_distributed(
            write_dataset(frame, tmp_path / "data", [700, len(frame) - 700]), checkpoint=tmp_path / "ck", progress=False, **SMALL
        )
        other = frame.copy()
        other.loc[0, "rating"] = 6 - other.loc[0, "rating"]  # one rating differs
        with pytest.raises(ValueError, match="cannot resume: the training ratings differ"):
            fit_distributed(write_dataset(other, tmp_path / "other", [len(other)]), resume=tmp_path / "ck", progress=False, **SMALL)
        comms = Comms()
        u, i, r = (frame[c].to_numpy() for c in ("user", "item", "rating"))
        u, i, r = u.astype(np.int32), i.astype(np.int32), r.astype(np.float32)
        whole = _fingerprint(comms, u, i, r)
        shuffled = np.random.default_rng(0).permutation(len(u))
        assert _fingerprint(comms, u[shuffled], i[shuffled], r[shuffled]) == whole
        assert _fingerprint(comms, u, i, np.where(np.arange(len(r)) == 3, r + 1, r).astype(np.float32)) != whole
    finally:
        dist.destroy_process_group()


def test_a_killed_rank_stops_the_job_naming_it_and_resume_reaches_the_uninterrupted_weights(tmp_path):
    frame = ratings_frame(400_000, 4000, 3000, seed=4)
    data = write_dataset(frame, tmp_path / "data", [len(frame) // 2, len(frame) - len(frame) // 2])
    settings = {"n_factors": 64, "epochs": 12, "seed": 3}
    ck, out = tmp_path / "ck", tmp_path / "out"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(free_port())]
    command += ["-m", "collabemb", "fit", "--distributed", str(data), "--out", str(out), "--checkpoint", str(ck), *options(settings)]
    job = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 180
        while not (ck / "CURRENT").exists() or read_checkpoint_state(ck)["epoch"] < 2:
            assert job.poll() is None and time.monotonic() < deadline, "the job ended or stalled before its second checkpoint"
            time.sleep(0.05)
        victim = rank_pid(job.pid, rank=1)
        os.kill(victim, signal.SIGKILL)  # in epoch 3 (or between epochs)
        t0 = time.monotonic()
        _, stderr = job.communicate(timeout=120)
        stopped_after = time.monotonic() - t0
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode != 0
    assert stopped_after < 60
    assert re.search(r"rank\s*:\s*1 \(local_rank: 1\)\s*\n\s*exitcode\s*:\s*-9", stderr), stderr[-3000:]  # torchrun names the dead rank
    # (rank 0 may also say, in one line, that another rank stopped: when it notices before torchrun's SIGTERM reaches it)
    assert not (out / "CURRENT").exists()  # no artifact from a broken job
    kept = read_checkpoint_state(ck)["epoch"]
    assert 2 <= kept < settings["epochs"]
    done = torchrun(2, str(data), "--out", str(out), "--checkpoint", str(ck), "--resume", str(ck), *options(settings))
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_model(ce.load_model(out), ce.fit(frame, threads=2, progress=False, **settings))


def rank_pid(torchrun_pid: int, rank: int) -> int:
    """The pid of the worker process with ``RANK=rank`` among torchrun's descendants (read from /proc)."""
    for _ in range(100):
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                environ = (entry / "environ").read_bytes().split(b"\0")
                status = (entry / "status").read_text()
            except OSError:
                continue
            parent = int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))
            if f"RANK={rank}".encode() in environ and parent == torchrun_pid:
                return int(entry.name)
        time.sleep(0.05)
    raise AssertionError(f"no rank {rank} worker under pid {torchrun_pid}")


def test_fit_distributed_outside_torchrun_is_one_line_refusal(tmp_path):
    frame = ratings_frame(100, 10, 10)
    data = write_dataset(frame, tmp_path / "data", [len(frame)])
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    done = subprocess.run(
        [sys.executable, "-m", "collabemb", "fit", "--distributed", str(data), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 2 and "torchrun" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_the_dataset_reader_summarises_shares_and_reads_by_user(tmp_path):
    frame = ratings_frame(3000, 50, 40, seed=8)
    data = RatingsDataset(write_dataset(frame, tmp_path / "data", [1000, 1000, 1000 + len(frame) - 3000]))
    shares = [data.summary(r, 2) for r in range(2)]
    assert sum(s.n_rows for s in shares) == len(frame)
    assert np.array_equal(np.union1d(shares[0].users, shares[1].users), np.unique(frame["user"]))
    users, items, ratings = data.read_users(np.array([3, 5, 7]))
    want = frame[frame["user"].isin([3, 5, 7])]
    assert sorted(zip(users.tolist(), items.tolist(), ratings.tolist())) == sorted(zip(want["user"], want["item"], want["rating"]))
    for ids, kind in ((np.array([5, -(2**63), 2**63 - 1]), "int"), (np.array(["a", "", "é\0x"], dtype=object), "str")):
        assert ids_of_bytes(id_bytes(ids, kind), kind).tolist() == ids.tolist()
    bad = tmp_path / "bad"
    bad.mkdir()
    pq.write_table(pa.table({"user": [1], "thing": [2], "rating": [3.0]}), bad / "x.parquet")
    with pytest.raises(ValueError, match="no column 'item'"):
        RatingsDataset(bad)
    pq.write_table(pa.table({"user": [1], "item": [2], "rating": [float("nan")]}), bad / "x.parquet")
    with pytest.raises(ValueError, match="not a finite"):
        RatingsDataset(bad).summary()
