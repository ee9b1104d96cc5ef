"""P x K identity samplers: batch structure, upsampling, reshuffling, cameras, DDP shares."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reid.data.samplers import DistributedPKSampler, PKCameraSampler, PKSampler


def batches(sampler: PKSampler) -> list[list[int]]:
    indices = list(sampler)
    size = sampler.batch_size
    assert len(indices) == len(sampler) and len(indices) % size == 0
    return [indices[i : i + size] for i in range(0, len(indices), size)]


def identity_counts(batch: list[int], labels) -> Counter:
    return Counter(int(labels[i]) for i in batch)


@st.composite
def label_lists(draw):
    """Random labels (with -1 outliers) plus a feasible K and P."""
    num_ids = draw(st.integers(1, 8))
    sizes = draw(st.lists(st.integers(1, 7), min_size=num_ids, max_size=num_ids))
    labels = [pid for pid, n in enumerate(sizes) for _ in range(n)]
    labels += [-1] * draw(st.integers(0, 5))
    order = draw(st.permutations(range(len(labels))))
    k = draw(st.integers(1, 4))
    p = draw(st.integers(1, num_ids))
    return [labels[i] for i in order], k, p


@settings(max_examples=60, deadline=None)
@given(
    case=label_lists(),
    balance=st.sampled_from(["identity", "instance"]),
    iters=st.none() | st.integers(1, 6),
    seed=st.integers(0, 2**16),
)
def test_every_batch_holds_p_distinct_identities_with_k_instances_each(case, balance, iters, seed):
    labels, k, p = case
    sampler = PKSampler(labels, k, p * k, seed=seed, iters=iters, balance=balance)
    for batch in batches(sampler):
        counts = identity_counts(batch, labels)
        assert -1 not in counts, "outliers are never sampled"
        assert len(counts) == p
        assert set(counts.values()) == {k}
        # an identity's K instances are consecutive
        assert all(len(set(labels[i] for i in batch[j : j + k])) == 1 for j in range(0, p * k, k))


def test_outliers_are_never_sampled():
    labels = [-1] * 50 + [0] * 4 + [1] * 4
    sampler = PKSampler(labels, num_instances=4, batch_size=8, iters=20)
    assert all(labels[i] != -1 for i in sampler)


def test_identities_with_fewer_than_k_images_are_upsampled_evenly():
    labels = [0, 1, 1] + [2] * 4
    sampler = PKSampler(labels, num_instances=4, batch_size=12, iters=5)
    for batch in batches(sampler):
        per_index = Counter(batch)
        assert per_index[0] == 4  # the single image of identity 0, four times
        assert per_index[1] == per_index[2] == 2  # identity 1: each of its 2 images twice
        assert all(per_index[i] == 1 for i in range(3, 7))


def test_iters_fixes_the_number_of_batches_per_epoch():
    labels = np.repeat(np.arange(10), 6)
    sampler = PKSampler(labels, num_instances=4, batch_size=16, iters=200)
    assert sampler.num_batches == 200
    assert len(sampler) == len(list(sampler)) == 200 * 16


def test_default_epoch_is_about_one_pass_of_the_identities():
    labels = np.repeat(np.arange(10), 6)
    assert PKSampler(labels, num_instances=4, batch_size=16).num_batches == 10 // 4
    instance = PKSampler(labels, num_instances=4, batch_size=16, balance="instance")
    assert instance.num_batches == (10 * 2) // 4  # ceil(6 / 4) = 2 groups per identity


def test_instance_balance_samples_large_identities_more_often():
    labels = [0] * 40 + [i for i in range(1, 10) for _ in range(4)]

    def share_of_big_identity(balance: str) -> float:
        sampler = PKSampler(labels, 4, 8, seed=1, iters=300, balance=balance)
        return sum(labels[i] == 0 for i in sampler) / len(sampler)

    assert share_of_big_identity("identity") < 0.2  # every identity equally often
    assert share_of_big_identity("instance") > 0.3  # every image equally often


def test_set_epoch_reshuffles_reproducibly():
    labels = np.repeat(np.arange(20), 5)
    a = PKSampler(labels, num_instances=4, batch_size=16, seed=7)
    b = PKSampler(labels, num_instances=4, batch_size=16, seed=7)
    epoch0 = list(a)
    a.set_epoch(1)
    epoch1 = list(a)
    assert epoch1 != epoch0
    b.set_epoch(1)
    assert list(b) == epoch1
    a.set_epoch(0)
    assert list(a) == epoch0
    assert list(PKSampler(labels, num_instances=4, batch_size=16, seed=8)) != epoch0


def test_camera_sampler_spreads_instances_across_cameras():
    # every identity has 3 images in each of 4 cameras
    labels = np.repeat(np.arange(6), 12)
    camids = np.tile(np.repeat(np.arange(4), 3), 6)
    four = PKCameraSampler(labels, camids, num_instances=4, batch_size=8, iters=30)
    for batch in batches(four):
        for j in range(0, 8, 4):
            assert sorted(camids[batch[j : j + 4]]) == [0, 1, 2, 3]
    eight = PKCameraSampler(labels, camids, num_instances=8, batch_size=16, iters=30)
    for batch in batches(eight):
        for j in range(0, 16, 8):
            assert sorted(Counter(camids[batch[j : j + 8]].tolist()).values()) == [2, 2, 2, 2]


def test_camera_sampler_spreads_every_group_when_balancing_instances():
    labels = np.repeat(np.arange(4), 12)
    camids = np.tile(np.repeat(np.arange(3), 4), 4)
    sampler = PKCameraSampler(labels, camids, 4, 8, iters=20, balance="instance")
    for batch in batches(sampler):
        for j in range(0, 8, 4):
            assert len(set(camids[batch[j : j + 4]].tolist())) == 3


def test_camera_sampler_falls_back_to_one_camera():
    labels = [0] * 5 + [1] * 5
    camids = [0] * 5 + [1] * 5
    sampler = PKCameraSampler(labels, camids, num_instances=4, batch_size=8, iters=3)
    for batch in batches(sampler):
        assert set(identity_counts(batch, labels).values()) == {4}


@pytest.mark.parametrize("world_size", [2, 3])
def test_distributed_shares_are_disjoint_and_of_equal_length(world_size):
    labels = np.repeat(np.arange(24), 4)
    kwargs = dict(num_instances=4, batch_size=8, seed=3)
    whole = batches(PKSampler(labels, iters=4 * world_size, **kwargs))
    shares = [
        batches(PKSampler(labels, iters=4, rank=r, world_size=world_size, **kwargs))
        for r in range(world_size)
    ]
    assert all(len(share) == 4 for share in shares)
    # rank r takes batches r, r + world_size, ... of the one global stream
    for r, share in enumerate(shares):
        assert share == whole[r::world_size]
    # within one pass (every identity once) no image is shared between ranks
    seen = [set(i for batch in share for i in batch) for share in shares]
    assert sum(map(len, seen)) == len(set().union(*seen))


def test_distributed_default_length_is_split_between_ranks():
    labels = np.repeat(np.arange(40), 4)
    full = PKSampler(labels, num_instances=4, batch_size=8)
    half = PKSampler(labels, num_instances=4, batch_size=8, rank=1, world_size=2)
    assert full.num_batches == 20 and half.num_batches == 10


def test_distributed_sampler_without_process_group_is_rank_zero_of_one():
    sampler = DistributedPKSampler(np.repeat(np.arange(4), 4), 4, 8)
    assert (sampler.rank, sampler.world_size) == (0, 1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(num_instances=4, batch_size=10), "multiple of num_instances"),
        (dict(num_instances=0, batch_size=8), "num_instances"),
        (dict(num_instances=4, batch_size=8, iters=0), "iters"),
        (dict(num_instances=4, batch_size=8, balance="random"), "balance"),
        (dict(num_instances=4, batch_size=8, rank=2, world_size=2), "rank"),
        (dict(num_instances=2, batch_size=20), r"P = .* 10 distinct identities but only 3"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PKSampler([0, 0, 1, 1, 2, 2, -1], **kwargs)


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ([-1, -1, -1], "no identity to sample"),
        ([], "no identity to sample"),
        ([0.5, 1.0], "integers"),
        ([[0, 1]], "1-D"),
    ],
)
def test_unusable_labels_raise_clear_errors(labels, message):
    with pytest.raises(ValueError, match=message):
        PKSampler(labels, num_instances=1, batch_size=1)


def test_camera_ids_must_match_labels():
    with pytest.raises(ValueError, match="one camera per image"):
        PKCameraSampler([0, 0, 1], [0, 1], num_instances=1, batch_size=2)
