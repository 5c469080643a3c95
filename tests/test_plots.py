"""Maps and plots: PCA coordinates, the item map, the bias ranking, the training curves, as PNGs."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

import collabemb as ce

from conftest import planted_ratings

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_shape(path) -> tuple[int, int]:
    from matplotlib.image import imread

    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 10_000
    image = imread(path)
    assert image.std() > 0.05  # not a blank canvas
    return image.shape[:2]


@pytest.fixture(scope="module")
def fitted():
    ratings = ce.read_ratings(planted_ratings(n_users=60, n_items=40, per_user=20, seed=2))
    train, valid = ce.split_random(ratings, 0.2, seed=0)
    model = ce.fit(train, valid=valid, n_factors=4, epochs=4, seed=0, progress=False)
    genres = ["Drama", "Drama|Film-Noir", "Comedy", "Comedy|Drama"] * 10
    model.set_item_metadata(pd.DataFrame({"item": np.arange(1, 41), "title": [f"Film {i:02d}" for i in range(1, 41)], "genres": genres}))
    return model, train


def planted_plane_model(n_items: int = 30) -> ce.FittedModel:
    """Item vectors on a 2-D plane inside 6 dimensions, spread 3:1 along its two axes."""
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.standard_normal((6, 2)))[0].T  # (2, 6) orthonormal rows
    coords = rng.standard_normal((n_items, 2)) * [3.0, 1.0]
    module = ce.EmbeddingDotBias(ce.IdRegistry([1]), ce.IdRegistry(np.arange(100, 100 + n_items)), n_factors=6)
    with torch.no_grad():
        module.i_weight.weight[1:] = torch.from_numpy((coords @ basis + 5.0).astype(np.float32))
        module.i_weight.weight[0] = 1e6  # row 0 must stay out of the PCA
    return ce.FittedModel(module)


def test_pca_recovers_a_planted_plane_with_distances_kept():
    model = planted_plane_model()
    pcs = ce.pca_frame(model)
    assert list(pcs.columns) == ["item", "pc1", "pc2"] and pcs["item"].tolist() == list(range(100, 130))
    ratio = pcs.attrs["explained_variance_ratio"]
    assert sum(ratio) == pytest.approx(1.0, abs=1e-6) and ratio[0] > 0.75
    xy = pcs[["pc1", "pc2"]].to_numpy()
    vectors = model.weight(pcs["item"], "item").astype(np.float64)
    d_pca = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
    d_vec = np.linalg.norm(vectors[:, None] - vectors[None], axis=-1)
    np.testing.assert_allclose(d_pca, d_vec, atol=1e-4)
    np.testing.assert_allclose(xy.mean(axis=0), 0.0, atol=1e-9)
    assert np.std(xy[:, 0]) > np.std(xy[:, 1])
    assert ce.pca_frame(model.module).equals(pcs)  # a bare module has the same tables


def test_pca_of_the_user_table_is_by_user_id(fitted):
    model, _ = fitted
    pcs = ce.pca_frame(model, "user", n_components=3)
    assert list(pcs.columns) == ["user", "pc1", "pc2", "pc3"]
    np.testing.assert_array_equal(pcs["user"].to_numpy(), model.users.ids)
    with pytest.raises(ValueError, match="table must be 'user' or 'item'"):
        ce.pca_frame(model, "users")


def test_pca_map_labels_the_most_rated_items_and_colours_by_the_rarest_genre(fitted, tmp_path):
    model, train = fitted
    fig = ce.plot_pca(model, n=5, ratings=train, color_by="genres", out=tmp_path / "map.png")
    counts = train.frame["item"].value_counts()
    top5 = pd.Series(counts.to_numpy(), index=counts.index).reindex(model.items.ids).to_numpy()
    expected = [f"Film {model.items.ids[i]:02d}" for i in np.argsort(-top5, kind="stable")[:5]]
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.texts] == expected
    legend = {t.get_text() for t in ax.get_legend().get_texts()}
    top_ids = model.items.ids[np.argsort(-top5, kind="stable")[:5]]
    genres_of_top = {("Film-Noir" if i % 4 == 2 else "Drama" if i % 4 == 1 else "Comedy") for i in top_ids}
    assert legend == {"all 40 items"} | genres_of_top
    assert "most-rated" in ax.get_title()
    assert png_shape(tmp_path / "map.png") == (935, 1210)


def test_pca_map_without_ratings_says_it_labels_the_farthest_items(fitted, tmp_path):
    model, _ = fitted
    seen, model.seen_items = model.seen_items, ce.SeenItems.empty(model.users.n_rows)  # a model that holds no training pairs
    try:
        fig = ce.plot_pca(model, n=3, out=tmp_path / "map.png")
    finally:
        model.seen_items = seen
    ax = fig.axes[0]
    assert "farthest from the centre" in ax.get_title()
    pcs = ce.pca_frame(model)
    far = np.argsort(-np.hypot(pcs["pc1"], pcs["pc2"]).to_numpy(), kind="stable")[:3]
    assert [t.get_text() for t in ax.texts] == [f"Film {model.items.ids[i]:02d}" for i in far]
    png_shape(tmp_path / "map.png")


def test_pca_map_counts_the_training_pairs_stored_with_the_model(fitted):
    model, train = fitted
    with_ratings = [t.get_text() for t in ce.plot_pca(model, n=6, ratings=train).axes[0].texts]
    assert len(model.seen_items) == len(train)  # fit stores the training pairs
    ax = ce.plot_pca(model, n=6).axes[0]
    assert [t.get_text() for t in ax.texts] == with_ratings
    assert "most-rated items (in the training pairs stored with the model)" in ax.get_title()


def test_a_model_without_item_metadata_is_labelled_by_raw_id(fitted):
    model, train = fitted
    bare = ce.FittedModel(model.module, model.identity, model.history, model.seen_items)  # item_metadata: empty
    assert bare.item_metadata.empty
    labels = [t.get_text() for t in ce.plot_pca(bare, n=4, ratings=train).axes[0].texts]
    titled = [t.get_text() for t in ce.plot_pca(model, n=4, ratings=train).axes[0].texts]
    assert titled == [f"Film {int(label):02d}" for label in labels]
    with pytest.raises(ValueError, match="cannot colour by 'genres': no item metadata"):
        ce.plot_pca(bare, n=4, color_by="genres")
    given = pd.DataFrame({"movie": model.items.ids, "name": [f"Other {i}" for i in model.items.ids]})
    ticks = ce.plot_bias(bare, n=2, metadata=given, metadata_id_col="movie", label_col="name").axes[0].get_yticklabels()
    assert all(t.get_text().startswith("Other ") for t in ticks)


def test_bias_ranking_shows_the_lowest_and_highest_items_with_counts(fitted, tmp_path):
    model, train = fitted
    fig = ce.plot_bias(model, n=4, ratings=train, min_ratings=1, out=tmp_path / "bias.png")
    bias = model.bias(model.items.ids, "item")
    counts = train.frame["item"].value_counts().reindex(model.items.ids, fill_value=0).to_numpy()
    order = np.argsort(bias, kind="stable")
    low_ax, high_ax = fig.axes
    # the most extreme item is the first tick, drawn at the top of its panel
    low = [t.get_text() for t in low_ax.get_yticklabels()]
    high = [t.get_text() for t in high_ax.get_yticklabels()]
    assert low_ax.get_yticks()[0] == 3
    label = lambda i: f"Film {model.items.ids[i]:02d} ({counts[i]})"  # noqa: E731
    assert low == [label(i) for i in order[:4]]
    assert high == [label(i) for i in order[::-1][:4]]
    assert high_ax.patches[0].get_width() == pytest.approx(float(bias.max()))
    png_shape(tmp_path / "bias.png")
    seen, model.seen_items = model.seen_items, ce.SeenItems.empty(model.users.n_rows)  # counts come from ratings= or the stored pairs
    try:
        with pytest.raises(ValueError, match="min_ratings needs ratings"):
            ce.plot_bias(model, min_ratings=5)
    finally:
        model.seen_items = seen


def test_history_plot_draws_the_recorded_curves(fitted, tmp_path):
    model, train = fitted
    fig = ce.plot_history(model, out=tmp_path / "history.png")
    ax = fig.axes[0]
    lines = {line.get_label(): line.get_ydata() for line in ax.get_lines() if not line.get_label().startswith("_")}
    np.testing.assert_allclose(lines["train RMSE"], model.history.train_rmse)
    np.testing.assert_allclose(lines["validation RMSE"], model.history.valid_rmse)
    np.testing.assert_allclose(fig.axes[1].get_lines()[0].get_ydata(), model.history.lr)
    png_shape(tmp_path / "history.png")
    np.testing.assert_allclose(ce.plot_history(model.history).axes[0].get_lines()[0].get_ydata(), model.history.train_rmse)
    bare = ce.FittedModel(ce.EmbeddingDotBias(ce.IdRegistry([1]), ce.IdRegistry([1])))  # an empty history
    with pytest.raises(ValueError, match="no training history"):
        ce.plot_history(bare)
    popularity = ce.fit_popularity(train.frame)  # fitted in one solve: no epochs
    with pytest.raises(ValueError, match="no training history"):
        ce.plot_history(popularity)
    with pytest.raises(ValueError, match=r"ending in \.png"):
        ce.plot_history(model, out=tmp_path / "history.jpg")


@pytest.mark.parametrize("plot", ["pca", "history"])
def test_cli_plot_writes_a_png_in_a_subprocess(fitted, tmp_path, plot):
    model, train = fitted
    ce.save_model(model, tmp_path / "art")
    train.frame.to_csv(tmp_path / "ratings.csv", index=False)
    extra = ["--ratings", str(tmp_path / "ratings.csv"), "--color-by", "genres", "--n", "8"] if plot == "pca" else []
    out = tmp_path / f"{plot}.png"
    result = subprocess.run(
        [sys.executable, "-m", "collabemb", "plot", str(tmp_path / "art"), plot, "--out", str(out), *extra],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"wrote {out}"
    png_shape(out)


def test_cli_plot_bias_with_a_metadata_file(fitted, tmp_path):
    from collabemb.cli import main

    model, _ = fitted
    ce.save_model(model, tmp_path / "art")
    pd.DataFrame({"movie": model.items.ids, "name": [f"Other {i}" for i in model.items.ids]}).to_csv(tmp_path / "m.csv", index=False)
    args = ["plot", str(tmp_path / "art"), "bias", "--out", str(tmp_path / "b.png"), "--n", "3"]
    args += ["--metadata", str(tmp_path / "m.csv"), "--metadata-id-col", "movie", "--label-col", "name"]
    assert main(args) == 0
    png_shape(tmp_path / "b.png")


def test_pca_labels_never_overlap_and_stay_inside_the_map(fitted):
    """With every item marked, labels that would overlap are left out (the title says how many); the
    placed ones overlap no other label and lie inside the axes."""
    model, train = fitted
    fig = ce.plot_pca(model, n=40, ratings=train, figsize=(4.0, 3.0))  # too small for 40 labels
    ax = fig.axes[0]
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in ax.texts]
    frame = ax.get_window_extent(renderer)
    assert 0 < len(boxes) < 40
    assert f"{len(boxes)} labelled, {40 - len(boxes)} not (their labels would overlap)" in ax.get_title()
    for i, box in enumerate(boxes):
        assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
        assert not any(box.overlaps(other) for other in boxes[i + 1 :])
