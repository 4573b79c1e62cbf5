"""bench/movielens_convert.py: MovieLens releases -> the movielens-poc layout, which the
pipeline then reads and validates like the shipped data."""

import importlib.util
from pathlib import Path

import pandas as pd
import pytest

from personalize_pipeline.datasets import read_dataset_group
from personalize_pipeline.features import FeaturizeOptions, featurize
from personalize_pipeline.validation import validate

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "movielens_convert.py"
spec = importlib.util.spec_from_file_location("movielens_convert", SCRIPT)
movielens_convert = importlib.util.module_from_spec(spec)
spec.loader.exec_module(movielens_convert)

# 60 users x 30 ratings of 40 movies (enough for Personalize's minimums), ratings 1-5
RATINGS = [(u, 10 + (7 * u + i) % 40, 1 + (u + i) % 5, 1_000 * u + i) for u in range(1, 61) for i in range(30)]
GENRES = {10: ("Action", "Comedy"), 11: ("Drama",)}  # other movies: no genre flag


def write_ml100k(folder: Path) -> None:
    folder.mkdir()
    (folder / "u.data").write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in RATINGS))
    rows = []
    for item in range(10, 50):
        bits = "|".join("1" if g in GENRES.get(item, ()) else "0" for g in movielens_convert.ML100K_GENRES)
        rows.append(f"{item}|Movie {item} (1995)|01-Jan-{1940 + item}||http://x|{bits}\n")
    (folder / "u.item").write_text("".join(rows), encoding="latin-1")


def write_ml1m(folder: Path) -> None:
    folder.mkdir()
    (folder / "ratings.dat").write_text("".join(f"{u}::{i}::{r}::{t}\n" for u, i, r, t in RATINGS))
    lines = [
        f"{item}::Movie {item} ({1940 + item})::{'|'.join(GENRES.get(item, ())) or '(no genres listed)'}\n"
        for item in range(10, 49)
    ]
    lines.append("49::Movie 49 without a year::(no genres listed)\n")
    (folder / "movies.dat").write_text("".join(lines), encoding="latin-1")


@pytest.mark.parametrize("layout", [write_ml100k, write_ml1m])
def test_events_follow_the_poc_rule_and_the_pipeline_reads_them(tmp_path, layout):
    layout(tmp_path / "src")
    info = movielens_convert.convert(tmp_path / "src", tmp_path / "out")
    ratings = pd.DataFrame(RATINGS, columns=["user", "item", "rating", "t"])
    watch, click = ratings[ratings.rating > 3], ratings[ratings.rating > 1]
    assert info == {"ratings": 1800, "watch": len(watch), "click": len(click), "users": 60, "items": 40}
    events = pd.read_csv(tmp_path / "out" / "interactions.csv")
    # watch = rating > 3, click = rating > 1, both at the rating's time, in time order
    got = events.groupby("EVENT_TYPE")[["USER_ID", "ITEM_ID", "TIMESTAMP"]].apply(
        lambda d: sorted(map(tuple, d.to_numpy().tolist()))
    )
    assert got["watch"] == sorted(map(tuple, watch[["user", "item", "t"]].to_numpy().tolist()))
    assert got["click"] == sorted(map(tuple, click[["user", "item", "t"]].to_numpy().tolist()))
    assert events.TIMESTAMP.is_monotonic_increasing
    items = pd.read_csv(tmp_path / "out" / "items.csv").set_index("ITEM_ID")
    assert (
        items.loc[10, "GENRE"] == "Action|Comedy"
        and items.loc[11, "GENRE"] == "Drama"
        and items.loc[12, "GENRE"] == "unknown"
    )
    assert items.loc[10, "YEAR"] == 1950 and items.YEAR.notna().all()
    group = read_dataset_group(tmp_path / "out")
    assert validate(group).success
    assert featurize(group, FeaturizeOptions(event_type="watch")).n_interactions == len(watch)


def test_unknown_folder_is_a_clear_error(tmp_path, capsys):
    assert movielens_convert.main([str(tmp_path), str(tmp_path / "out")]) == 2
    assert "no MovieLens files found" in capsys.readouterr().err
