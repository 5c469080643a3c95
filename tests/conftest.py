"""Shared fixtures: small planted rating data built in the test, never read from outside."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest


def planted_ratings(n_users: int = 120, n_items: int = 80, per_user: int = 30, *, seed: int = 0, string_ids: bool = False) -> pd.DataFrame:
    """Ratings from a known rank-3 model with biases, rounded to 1..5 stars.

    Returns a DataFrame with user, item, rating (float), timestamp (int) columns; user and item IDs
    are ints 1.. (or strings "u001", "i001" when ``string_ids``).
    """
    rng = np.random.default_rng(seed)
    p = rng.normal(0, 0.8, (n_users, 3))
    q = rng.normal(0, 0.8, (n_items, 3))
    bu = rng.normal(0, 0.4, n_users)
    bi = rng.normal(0, 0.5, n_items)
    users = np.repeat(np.arange(n_users), per_user)
    items = np.concatenate([rng.choice(n_items, per_user, replace=False) for _ in range(n_users)])
    score = 3.6 + bu[users] + bi[items] + (p[users] * q[items]).sum(1) + rng.normal(0, 0.3, len(users))
    frame = pd.DataFrame(
        {"user": users + 1, "item": items + 1, "rating": np.clip(np.rint(score), 1, 5), "timestamp": 1_000_000 + np.arange(len(users)) * 60}
    )
    if string_ids:
        frame["user"] = [f"u{v:03d}" for v in frame["user"]]
        frame["item"] = [f"i{v:03d}" for v in frame["item"]]
    return frame


@pytest.fixture
def ratings_frame() -> pd.DataFrame:
    return planted_ratings()


def snapshot_of(store) -> Path:
    """The current snapshot directory of an artifact or checkpoint store (``STORE/snap-*``)."""
    store = Path(store)
    return store / json.loads((store / "CURRENT").read_text())["snapshot"]


def reseal(store) -> None:
    """Rewrite the manifest and pointer of ``store``'s current snapshot to match its files as they
    are now: what an attacker who edits a file and recomputes the hashes does. Tests use it to reach
    the checks behind the manifest."""
    snap = snapshot_of(store)
    manifest = json.loads((snap / "manifest.json").read_text())
    manifest["files"] = {
        p.name: {"size": p.stat().st_size, "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
        for p in sorted(snap.iterdir())
        if p.name != "manifest.json"
    }
    data = json.dumps(manifest, sort_keys=True).encode()
    (snap / "manifest.json").write_bytes(data)
    pointer = json.loads((store / "CURRENT").read_text())
    pointer["manifest_sha256"] = hashlib.sha256(data).hexdigest()
    (Path(store) / "CURRENT").write_text(json.dumps(pointer))


def flatten(store) -> Path:
    """Turn ``store`` into the layout of artifacts written before snapshots (files directly in the
    directory, no manifest, no pointer), as collabemb 0.2 wrote them. Returns ``store``."""
    store = Path(store)
    snap = snapshot_of(store)
    for p in snap.iterdir():
        if p.name != "manifest.json":
            p.rename(store / p.name)
    (snap / "manifest.json").unlink()
    snap.rmdir()
    (store / "CURRENT").unlink()
    (store / ".lock").unlink(missing_ok=True)
    return store
