"""The data profile shown on the validated datasets: per column type, non-null share,
distinct values and a summary, in a Markdown table; a large dataset is profiled on its first rows."""

from personalize_pipeline.dataset_profile import profile_markdown
from personalize_pipeline.datasets import read_dataset_group


def write_group(tmp_path):
    (tmp_path / "interactions.csv").write_text(
        "USER_ID,ITEM_ID,TIMESTAMP,EVENT_VALUE,EVENT_TYPE\n"
        "u1,i1,100,1.5,click\n"
        "u1,i2,200,,click\n"
        "u2,i1,300,4.5,watch|later\n"
        "u3,i3,400,3,click\n"
    )
    return read_dataset_group(tmp_path).interactions


def test_profile_counts_and_summarises_each_column(tmp_path):
    lines = profile_markdown(write_group(tmp_path)).splitlines()
    assert lines[:2] == ["| column | type | non-null | distinct | summary |", "|---|---|---|---|---|"]
    rows = {line.split(" | ")[0].lstrip("| "): line for line in lines[2:]}
    assert set(rows) == {"USER_ID", "ITEM_ID", "TIMESTAMP", "EVENT_VALUE", "EVENT_TYPE"}
    assert rows["USER_ID"] == "| USER_ID | string | 100.0% | 3 | u1 (2), u2 (1), u3 (1) |"
    assert rows["TIMESTAMP"].endswith("| 100.0% | 4 | min 100, median 250, max 400 |")
    assert "| 75.0% | 3 | min 1.5, median 3, max 4.5 |" in rows["EVENT_VALUE"]
    assert "watch&#124;later (1)" in rows["EVENT_TYPE"]  # a "|" in a value cannot break the table


def test_profile_of_the_first_rows_says_so(tmp_path):
    text = profile_markdown(write_group(tmp_path), max_rows=2)
    assert text.startswith("Profile of the first 2 of 4 rows.\n")
    assert "| USER_ID | string | 100.0% | 1 | u1 (2) |" in text
