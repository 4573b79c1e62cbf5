"""The block renderer of batch output lines against the per-element way (json.dumps of the
input and item ids, repr of each score rounded to 7 decimals), and the compute device setting."""

import json

import numpy as np
import pytest
import torch

from personalize_pipeline.errors import InputError
from personalize_pipeline.recipes.scoring import LinearScorer, normalised_top_k, resolve_device
from personalize_pipeline.rendering import (
    input_json,
    render_top_line,
    render_top_lines,
    renderable,
    score_text,
    text_table,
)

EDGE_SCORES = [
    0.0,
    1.0,
    1e-7,
    4.9e-8,
    5e-8,
    1e-5,
    1.2e-5,
    1.23e-5,
    9.99e-5,
    1e-4,
    0.00012,
    0.5,
    0.1234567,
    0.99999996,
    3.4916984e-06,
]


def test_score_text_matches_repr_of_the_rounded_score():
    rng = np.random.default_rng(0)
    values = np.concatenate(
        [
            np.array(EDGE_SCORES, np.float32),
            rng.random(20_000).astype(np.float32),
            (10 ** rng.uniform(-9, 0, 20_000)).astype(np.float32),
        ]
    )
    got = score_text(values)
    expected = [repr(v) for v in np.round(values.astype(np.float64), 7).tolist()]
    assert got == expected


def test_block_lines_are_byte_identical_to_the_per_element_renderer():
    item_ids = ["a", "007", 'quote " and \\ back', "ünï", "tab\there", "x" * 300, "1"]
    encoded = [json.dumps(i, ensure_ascii=False) for i in item_ids]
    inputs = [{"userId": "u1"}, {"userId": 'ü " 2'}, {"userId": "u3", "filterValues": {"G": '"x"'}}, {"userId": "u4"}]
    items = np.array([[0, 5, 2, 1], [3, 4, -1, -1], [6, 0, 1, -1], [-1, -1, -1, -1]])
    scores = np.array(
        [[0.5, 1.2e-5, 1e-7, 0.0], [1.0, 0.1234567, 0, 0], [3.49e-6, 0.25, 9.99e-5, 0], [0, 0, 0, 0]], dtype=np.float32
    )
    assert renderable(items, scores)
    block = render_top_lines([input_json(o) for o in inputs], items, scores, text_table(encoded)).decode()
    expected = []
    for obj, row_items, row_scores in zip(inputs, items, scores, strict=True):
        keep = row_items >= 0
        expected.append(
            render_top_line(
                json.dumps(obj, ensure_ascii=False), [encoded[i] for i in row_items[keep]], row_scores[keep].tolist()
            )
        )
    assert block.splitlines() == expected
    assert [json.loads(line)["output"]["recommendedItems"] for line in block.splitlines()] == [
        [item_ids[i] for i in row if i >= 0] for row in items
    ]
    assert not renderable(np.array([[0]]), np.array([[np.nan]]))


def test_normalised_top_k_gives_softmax_scores_over_the_allowed_catalogue():
    rng = np.random.default_rng(1)
    logits = torch.from_numpy(rng.normal(size=(6, 50)).astype(np.float32))
    allowed = rng.random((6, 50)) < 0.7
    allowed[5] = False  # nothing allowed: an empty list
    masked = logits.masked_fill(~torch.from_numpy(allowed), -torch.inf)
    expected = torch.softmax(masked[:5], dim=1).numpy()
    items, scores = normalised_top_k(masked.clone(), 10)
    assert (items[5] == -1).all() and (scores[5] == 0).all()
    for row in range(5):
        order = np.argsort(-expected[row], kind="stable")[:10]
        assert items[row].tolist() == order.tolist()
        np.testing.assert_allclose(scores[row], expected[row][order], rtol=1e-5)
    scorer = LinearScorer.build(torch.eye(3), torch.zeros(3), torch.tensor([0.0, 1.0, 2.0]))
    items, _ = scorer.top_k(2, np.array([0]), torch.tensor([[5.0, 0.0, 0.0]]), 3)
    assert items.tolist() == [[0, 1, 2], [2, 1, 0]]  # row 1 has no vector: the fallback order


def test_device_setting(monkeypatch):
    monkeypatch.delenv("PERSONALIZE_DEVICE", raising=False)
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    monkeypatch.setenv("PERSONALIZE_DEVICE", "cpu")
    assert resolve_device(None).type == "cpu"
    with pytest.raises(InputError, match="device must be one of"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA device"):
            resolve_device("cuda")
