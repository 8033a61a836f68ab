"""Maximal-Hamming permutation sets and their file formats."""
import numpy as np
import pytest

from jigsaw.permutations import (hamming_stats, load_permutations, make_permutations,
                                 save_permutations)
from tools.run.errors import UserError


def test_1000_permutations_mean_distance_at_least_8():
    perms = make_permutations(1000, seed=0)
    assert perms.shape == (1000, 9) and perms.dtype == np.int64
    assert (np.sort(perms, axis=1) == np.arange(9)).all()
    assert len(np.unique(perms, axis=0)) == 1000
    mean, low = hamming_stats(perms)
    assert mean >= 8.0 and low >= 1


def test_100_permutations_mean_8_min_2_and_maximin_option():
    mean, low = hamming_stats(make_permutations(100, seed=0))
    assert mean >= 8.0 and low >= 2
    mean, low = hamming_stats(make_permutations(100, seed=0, criterion="min"))
    assert mean >= 8.0 and low >= 5


def test_deterministic_for_a_seed():
    assert np.array_equal(make_permutations(50, seed=3), make_permutations(50, seed=3))
    assert not np.array_equal(make_permutations(50, seed=3), make_permutations(50, seed=4))


def test_greedy_set_beats_random_sets():
    rng = np.random.default_rng(0)
    random_mean = hamming_stats(np.array([rng.permutation(9) for _ in range(100)]))[0]
    assert hamming_stats(make_permutations(100))[0] > random_mean + 0.05


@pytest.mark.parametrize("ext", [".npy", ".bin", ".h5"])
def test_file_round_trip(tmp_path, ext):
    perms = make_permutations(30, seed=1)
    path = str(tmp_path / f"p{ext}")
    save_permutations(path, perms)
    assert np.array_equal(load_permutations(path), perms)


def test_bin_is_the_original_one_indexed_layout(tmp_path):
    perms = make_permutations(5)
    path = tmp_path / "p.bin"
    save_permutations(str(path), perms)
    raw = np.fromfile(path, dtype="<i4")
    assert raw[:2].tolist() == [5, 9] and raw[2:].reshape(5, 9).min() == 1
    assert np.array_equal(raw[2:].reshape(5, 9) - 1, perms)


@pytest.mark.parametrize("content,expect", [
    (np.array([[0, 1, 2, 3, 4, 5, 6, 7, 7]]), "not a permutation"),
    (np.zeros((3, 8), dtype=int), r"\(N, 9\)"),
    (np.array([list(range(9))] * 2), "duplicate"),
])
def test_bad_permutation_files(tmp_path, content, expect):
    path = tmp_path / "bad.npy"
    np.save(path, content)
    with pytest.raises(UserError, match=expect):
        load_permutations(str(path))


def test_truncated_bin(tmp_path):
    path = tmp_path / "bad.bin"
    np.array([10, 9, 1, 2, 3], "<i4").tofile(path)
    with pytest.raises(UserError, match="header"):
        load_permutations(str(path))
