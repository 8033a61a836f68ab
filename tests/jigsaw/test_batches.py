"""Deterministic batches: the stream's definition (seeded epoch permutations), the background reader,
resumption from any k, slices per process, reader errors, and the train/validation split."""
import numpy as np
import pytest
import torch

from jigsaw.batches import BatchStream, batch_indices, split_indices


def _reference_stream(pool, seed, epochs):
    return np.concatenate([pool[np.random.default_rng([seed, 11, e]).permutation(len(pool))]
                           for e in range(epochs)])


@pytest.mark.parametrize("n,batch", [(10, 4), (7, 7), (5, 12)])
def test_batches_are_consecutive_slices_of_seeded_epoch_permutations(n, batch):
    pool = np.arange(100, 100 + 2 * n, 2)  # a subset of a store's indices
    want = _reference_stream(pool, 3, 20)
    batches = -(-3 * n // batch) + 1  # past three epoch boundaries
    got = np.concatenate([batch_indices(pool, batch, k, 3) for k in range(batches)])
    assert np.array_equal(got, want[:batches * batch])
    for e in range(3):  # every epoch shows every image once
        assert sorted(got[e * n:(e + 1) * n]) == sorted(pool)
    got = got[:5 * batch]
    other_seed = np.concatenate([batch_indices(pool, batch, k, 4) for k in range(5)])
    assert not np.array_equal(other_seed, got)


class _Source:
    image_size = (2, 2)

    def __init__(self, fail_at=None):
        self.fail_at = fail_at
        self.reads = 0

    def read(self, idx, out=None):
        self.reads += 1
        if self.fail_at is not None and self.reads > self.fail_at:
            raise OSError("disk went away")
        return np.broadcast_to(np.asarray(idx, np.uint8)[:, None, None, None], (len(idx), 2, 2, 3)).copy()


def test_stream_resumes_at_any_batch_and_slices_per_process():
    pool = np.arange(9)
    full = BatchStream(_Source(), pool, 4, 0)
    first = [full.next() for _ in range(6)]
    full.close()
    assert [k for k, _ in first] == list(range(6))
    resumed = BatchStream(_Source(), pool, 4, 0, start=3)
    assert all(torch.equal(resumed.next()[1], first[k][1]) for k in range(3, 6))
    resumed.close()
    halves = [BatchStream(_Source(), pool, 4, 0, part=slice(r * 2, r * 2 + 2)) for r in range(2)]
    for k in range(3):
        parts = [h.next() for h in halves]
        assert all(p[0] == k for p in parts)
        assert torch.equal(torch.cat([p[1] for p in parts]), first[k][1])
    for h in halves:
        h.close()


def test_a_reader_error_reaches_the_training_thread():
    stream = BatchStream(_Source(fail_at=2), np.arange(9), 4, 0)
    stream.next()
    stream.next()
    with pytest.raises(OSError, match="disk went away"):
        stream.next()
    stream.close()


def test_split_is_seeded_disjoint_and_complete():
    train, val = split_indices(100, 0.05, 7)
    assert len(val) == 5 and len(train) == 95 and not set(train) & set(val)
    assert sorted(np.concatenate([train, val])) == list(range(100))
    assert all(np.array_equal(a, b) for a, b in zip((train, val), split_indices(100, 0.05, 7)))
    assert not np.array_equal(val, split_indices(100, 0.05, 8)[1])
    assert len(split_indices(10, 0.001, 0)[1]) == 1 and len(split_indices(10, 0, 0)[1]) == 0
    with pytest.raises(ValueError, match="cannot hold out"):
        split_indices(2, 0.9, 0)
