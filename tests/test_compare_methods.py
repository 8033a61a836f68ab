"""benchmarks/compare_methods.py on small probe caches made here: each net's stage is chosen on validation draws
from the training split (a stage that only the test split favours is never chosen), and --out writes the CSV and
the gain plot of each method over its own twins."""
import csv
import json
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import compare_methods  # noqa: E402
from tools.run.runtime import numpy_rng  # noqa: E402

N_TRAIN, N_TEST, CLASSES, DIMS = 6000, 400, 10, 16


def _features(rng, labels, signal):
    """Rows whose class mean is `signal` standard deviations from the others' (0: noise only)."""
    centres = rng.standard_normal((CLASSES, DIMS))
    return (signal * centres[labels] + rng.standard_normal((len(labels), DIMS))).astype(np.float32)


def _net(folder, name, seed, train_signal, twin):
    """One net's cache: stage 'honest' as informative on train as on test; stage 'leaky' far more informative,
    except on the rows compare_methods holds out as validation queries, which are noise: only a choice made on
    the test split would take it."""
    rng = np.random.default_rng(seed)
    cache = os.path.join(folder, "probe_in_domain", "cache", name)
    os.makedirs(cache)
    y_train, y_test = rng.integers(0, CLASSES, N_TRAIN), rng.integers(0, CLASSES, N_TEST)
    np.save(os.path.join(cache, "labels_train.npy"), y_train)
    np.save(os.path.join(cache, "labels_test.npy"), y_test)
    honest = np.random.default_rng(seed + 1)
    state = honest.bit_generator.state
    np.save(os.path.join(cache, "honest_train.npy"), _features(honest, y_train, train_signal))
    honest.bit_generator.state = state  # the same class centres for the test split
    np.save(os.path.join(cache, "honest_test.npy"), _features(honest, y_test, train_signal))
    leaky = np.random.default_rng(seed + 2)
    state = leaky.bit_generator.state
    x = _features(leaky, y_train, 3.0)
    queries = numpy_rng(0, 34).permutation(N_TRAIN)[:compare_methods.VAL_QUERIES]  # as score_net's seed 0 splits
    x[queries] = np.random.default_rng(seed + 3).standard_normal((len(queries), DIMS))
    np.save(os.path.join(cache, "leaky_train.npy"), x)
    leaky.bit_generator.state = state
    np.save(os.path.join(cache, "leaky_test.npy"), _features(leaky, y_test, 3.0))
    with open(os.path.join(cache, "net.json"), "w") as f:
        json.dump({"twin": seed} if twin else {"weights": f"seed{seed}/last.pt"}, f)
    return cache


def _method(folder, pretrained_signal):
    for k in range(2):
        _net(folder, f"p{k}", 10 + k, pretrained_signal, twin=False)
    for k in range(3):
        _net(folder, f"r{k}", 20 + k, 0.6, twin=True)


def test_the_stage_is_chosen_on_validation_draws_never_on_the_test_split(tmp_path):
    cache = _net(str(tmp_path), "n", 1, 0.5, twin=False)
    scored = compare_methods.score_net(cache, [1, 10], draws=2, seed=0)
    for budget in (1, 10):
        stage, validation, test = scored[budget]
        assert stage == "honest" and 0.15 < validation < 1.0 and 0.15 < test < 1.0, scored
    for split in ("train", "test"):  # alone, the leaky stage scores far higher on test: it was not chosen there
        os.remove(os.path.join(cache, f"honest_{split}.npy"))
    leaky = compare_methods.score_net(cache, [1, 10], draws=2, seed=0)
    for budget in (1, 10):
        assert leaky[budget][0] == "leaky" and leaky[budget][1] < 0.2 and leaky[budget][2] > scored[budget][2] + 0.1, \
            (leaky, scored)


def test_out_writes_each_methods_gain_over_its_own_twins_as_csv_and_png(tmp_path):
    _method(str(tmp_path / "strong"), 1.5)
    _method(str(tmp_path / "weak"), 0.6)
    prefix = str(tmp_path / "cmp")
    r = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "compare_methods.py"),
                        f"strong={tmp_path / 'strong'}", f"weak={tmp_path / 'weak'}", "--draws", "2", "--out", prefix],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    with open(prefix + ".csv") as f:
        rows = {(row["method"], int(row["labels_per_class"])): row for row in csv.DictReader(f)}
    assert set(rows) == {(m, b) for m in ("strong", "weak") for b in (1, 10)}
    for b in (1, 10):
        strong, weak = rows[("strong", b)], rows[("weak", b)]
        assert (strong["pretrained_nets"], strong["random_nets"]) == ("2", "3")
        assert abs(float(strong["gain_points"]) - 100 * (float(strong["pretrained"]) - float(strong["random_mean"]))) \
            < 1e-9
        assert float(strong["gain_points"]) > 10 and float(strong["gain_se"]) > 3  # centres 1.5 SD apart vs 0.6
        assert abs(float(weak["gain_points"])) < float(strong["gain_points"])
    with open(prefix + ".png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert "strong     vs weak pretrained" in r.stdout
