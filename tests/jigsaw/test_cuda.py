"""The CUDA path: the same `jigsaw train` code with bf16, channels_last, torch.compile and deferred
logging switched on. Runs only where a GPU is present (a device session: `benchmarks/device_run.sh`);
the CPU suite covers the same code with the switches off, and torch.compile on the CPU."""
import csv
import warnings

import pytest
import torch

from jigsaw.train import TrainConfig, train
from tools.caffe.layers.lrn import lrn_across

from ..tools.caffe import reference as ref
from .conftest import small_run

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def setup(tmp_path_factory, photo_store_square):
    tmp = tmp_path_factory.mktemp("cuda")
    return tmp, small_run(tmp, photo_store_square, 8, batch_size=16, width=0.25, max_iter=6, init="msra",
                          recipe="bbrattoli", base_lr=1e-3)


def _losses(out):
    with open(out / "log.csv") as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


@pytest.mark.parametrize("dtype,rtol", [(torch.float32, 1e-5), (torch.bfloat16, 2 ** -8)])
def test_lrn_on_the_gpu_matches_the_float64_reference(dtype, rtol):
    x = torch.randn(18, 96, 13, 13, dtype=torch.float64) * 30
    y = lrn_across(x.cuda().to(dtype).to(memory_format=torch.channels_last), 5, 1e-4, 0.75, 1.0)
    expect = ref.lrn_across(x.to(dtype).double().numpy(), 5, 1e-4, 0.75, 1.0)
    torch.testing.assert_close(y.double().cpu(), torch.from_numpy(expect), rtol=rtol, atol=1e-5)


def test_fp32_on_the_gpu_follows_the_cpu_loss_curve(setup):
    tmp, common = setup
    train(TrainConfig(out=str(tmp / "cpu"), device="cpu", **common))
    train(TrainConfig(out=str(tmp / "gpu32"), device="cuda", precision="fp32", **common))
    cpu, gpu = _losses(tmp / "cpu"), _losses(tmp / "gpu32")
    assert all(0 < a < 10 for a in cpu), cpu  # a run that learns, not one that diverges
    # TF32 is off in fp32 mode; what remains is cuDNN's summation order
    assert all(abs(a - b) < 1e-3 for a, b in zip(cpu, gpu)), (cpu, gpu)


@pytest.mark.parametrize("mode", [None, "default", "reduce-overhead"])
def test_bf16_path_trains_and_tracks_fp32(setup, mode):
    tmp, common = setup
    out = tmp / f"bf16-{mode}"
    train(TrainConfig(out=str(out), device="cuda", precision="bf16", compile=mode, **common))
    fp32 = tmp / "gpu32"
    if not (fp32 / "log.csv").exists():
        train(TrainConfig(out=str(fp32), device="cuda", precision="fp32", **common))
    a, b = _losses(fp32), _losses(out)
    assert len(b) == 6 and all(abs(x - y) < 0.05 * max(1.0, abs(x)) for x, y in zip(a, b)), (a, b)


def test_the_training_loop_does_not_wait_for_the_gpu_every_step(setup):
    """Synchronising calls made by the training thread (the reader thread's wait for its own copy
    stream is allowed: it never holds up the training stream)."""
    import threading
    tmp, common = setup
    seen = []

    def record(message, category, *args, **kwargs):
        if threading.current_thread() is threading.main_thread() and "synchroniz" in str(message).lower():
            seen.append(str(message)[:120])

    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = record
            train(TrainConfig(out=str(tmp / "nosync"), device="cuda", log_every=12, **dict(common, max_iter=12)))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    # set-up, one flush and the end of the run may wait; twelve steps must not each add one
    assert len(seen) < 12, seen


def test_batch_stream_stages_the_same_batches_onto_the_gpu(photo_store):
    import numpy as np

    from jigsaw.batches import BatchStream
    from jigsaw.store import ImageStore
    source = ImageStore(photo_store)
    pool = np.arange(len(source))
    cpu, gpu = BatchStream(source, pool, 4, 3), BatchStream(source, pool, 4, 3, device="cuda")
    try:
        for _ in range(5):
            (k1, a), (k2, b) = cpu.next(), gpu.next()
            assert k1 == k2 and b.is_cuda and torch.equal(a, b.cpu())
    finally:
        cpu.close()
        gpu.close()


@pytest.mark.parametrize("name", ["jps", "jps++"])
def test_recipe_tiles_on_the_gpu_equal_the_cpus(name):
    """Integer gathers and float64 colour/MVN arithmetic are IEEE on both: jps bit for bit, jps++
    within float32 rounding of its MVN reductions (1e-5 relative)."""
    import numpy as np
    from jigsaw.recipes import recipe
    from jigsaw.tiles import draw, make_puzzles
    cfg = recipe(name)
    perms = torch.from_numpy(np.stack([np.random.default_rng(i).permutation(9) for i in range(30)]))
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (64, 257, 257, 3), dtype=np.uint8))
    d = draw(64, 30, (257, 257), cfg, torch.Generator().manual_seed(0))
    cpu = make_puzzles(images, perms, d, cfg)
    gpu = make_puzzles(images.cuda(), perms.cuda(), d, cfg).cpu()
    if name == "jps":
        assert torch.equal(cpu, gpu)
    else:
        assert ((cpu - gpu).abs() <= 1e-5 * cpu.abs().clamp_min(1)).all()
