"""The per-batch item table of the GRU family's item encoder: looking items up through it
gives the same vectors and the same gradients as looking each one up directly, whatever
the encoder (free embedding, item tower mask, metadata projection) and whether the table
holds every item or only the batch's."""

import numpy as np
import pytest
import torch
from torch import nn

from personalize_pipeline.recipes.hrnn import GRUNet
from personalize_pipeline.recipes.item_encoders import ItemEncoder

N_ITEMS, DIM = 40, 6


def network(variant: str) -> GRUNet:
    torch.manual_seed(0)
    net = GRUNet(N_ITEMS, DIM, 0.0, 0.0)
    if variant == "metadata":
        net.item_proj = nn.Linear(3, DIM, bias=False)
        net.item_meta = torch.randn(N_ITEMS, 3)
    if variant == "item tower":
        net.encoder = ItemEncoder(keep=np.arange(N_ITEMS) % 3 != 0)
    return net


def loss_and_grads(net: GRUNet, lookups: list[torch.Tensor], table_codes: torch.Tensor | None, use_table: bool):
    net.zero_grad(set_to_none=True)
    weights = [torch.linspace(-1, 1, len(c) * DIM).reshape(len(c), DIM) for c in lookups]
    if use_table:
        with net.encoder.batch_table(net, table_codes):
            loss = sum((net.item_vectors(c) * w).sum() for c, w in zip(lookups, weights, strict=True))
    else:
        loss = sum((net.item_vectors(c) * w).sum() for c, w in zip(lookups, weights, strict=True))
    loss.backward()
    grads = {name: p.grad.clone() for name, p in net.named_parameters() if p.grad is not None}
    return float(loss.detach()), grads


@pytest.mark.parametrize("variant", ["free embedding", "item tower", "metadata"])
@pytest.mark.parametrize("n_lookups", [9, 60])  # fewer codes than items (the batch's items), more (every item)
def test_batch_table_gives_the_same_vectors_and_gradients(variant, n_lookups):
    rng = np.random.default_rng(1)
    lookups = [torch.from_numpy(rng.integers(0, N_ITEMS, n)) for n in (n_lookups, n_lookups // 3, 4)]
    codes = torch.cat(lookups)
    net = network(variant)
    direct_loss, direct = loss_and_grads(net, lookups, codes, use_table=False)
    table_loss, tabled = loss_and_grads(net, lookups, codes, use_table=True)
    assert table_loss == pytest.approx(direct_loss, rel=1e-6)
    assert direct.keys() == tabled.keys() and "embedding.weight" in direct
    for name in direct:
        torch.testing.assert_close(tabled[name], direct[name], rtol=1e-5, atol=1e-6)
    # items no lookup touched get no gradient
    untouched = np.setdiff1d(np.arange(N_ITEMS), codes.numpy())
    assert untouched.size and not tabled["embedding.weight"][torch.from_numpy(untouched)].any()


def test_batch_table_is_dropped_after_the_batch():
    net = network("free embedding")
    with net.encoder.batch_table(net, torch.tensor([3, 5])):
        assert net.item_vectors(torch.tensor([5])).shape == (1, DIM)
        with pytest.raises(IndexError):  # an item the batch did not declare: no silent wrong row
            net.item_vectors(torch.tensor([7]))
    torch.testing.assert_close(net.item_vectors(torch.tensor([7])), net.embedding.weight[[7]])
