"""The fused cross-channel LRN (one autograd op with Caffe's hand-written backward) against float64
references: the forward against a transcription of Caffe's loop, the gradient against autograd through
PyTorch's own F.local_response_norm (an independent implementation) and against finite differences."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tools.caffe.layers.lrn import lrn_across

from . import reference as ref


def _x(shape, seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float64) * scale).requires_grad_()


@pytest.mark.parametrize("size,alpha,beta,k,shape", [
    (5, 1e-4, 0.75, 1.0, (2, 7, 5, 4)),     # the CFN's setting
    (5, 0.5, 0.75, 2.0, (1, 3, 4, 4)),      # window wider than the channel count
    (3, 0.1, 0.5, 1.5, (2, 6, 3, 5)),
    (1, 0.3, 1.2, 1.0, (1, 4, 2, 2)),
])
def test_forward_and_gradient_match_float64_references(size, alpha, beta, k, shape):
    x = _x(shape)
    y = lrn_across(x, size, alpha, beta, k)
    np.testing.assert_allclose(y.detach().numpy(), ref.lrn_across(x.detach().numpy(), size, alpha, beta, k),
                               rtol=1e-12, atol=1e-12)
    g = torch.randn(shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ours, = torch.autograd.grad(y, x, g)
    x2 = x.detach().clone().requires_grad_()
    theirs, = torch.autograd.grad(F.local_response_norm(x2, size, alpha, beta, k), x2, g)
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-10, atol=1e-12)
    assert torch.autograd.gradcheck(lambda t: lrn_across(t, size, alpha, beta, k), (x,), eps=1e-6, atol=1e-7)


def test_float32_matches_float64_within_float_rounding():
    x = _x((4, 96, 13, 13), scale=40.0)  # conv1 activations of a real CFN reach tens
    y64 = lrn_across(x, 5, 1e-4, 0.75, 1.0)
    g = torch.randn_like(x)
    g64, = torch.autograd.grad(y64, x, g)
    x32 = x.detach().float().requires_grad_()
    y32 = lrn_across(x32, 5, 1e-4, 0.75, 1.0)
    g32, = torch.autograd.grad(y32, x32, g.float())
    assert y32.dtype == torch.float32
    torch.testing.assert_close(y32.double(), y64.detach(), rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(g32.double(), g64, rtol=1e-5, atol=1e-6)


def test_bfloat16_input_is_normalised_in_float32_and_returned_in_bfloat16():
    x = _x((2, 16, 6, 6), scale=20.0).detach().to(torch.bfloat16).requires_grad_()
    y = lrn_across(x, 5, 1e-4, 0.75, 1.0)
    assert y.dtype == torch.bfloat16
    expect = ref.lrn_across(x.detach().double().numpy(), 5, 1e-4, 0.75, 1.0)
    # the only error left is bf16's final rounding of the output (8 bits of mantissa)
    np.testing.assert_allclose(y.detach().double().numpy(), expect, rtol=2 ** -8, atol=1e-6)
    y.float().sum().backward()
    assert x.grad.dtype == torch.bfloat16 and torch.isfinite(x.grad.float()).all()


def test_channels_last_input_gives_the_same_values():
    x = _x((2, 8, 5, 5)).detach().float()
    a = lrn_across(x, 5, 1e-4, 0.75, 1.0)
    b = lrn_across(x.to(memory_format=torch.channels_last), 5, 1e-4, 0.75, 1.0)
    assert torch.equal(a, b.contiguous())


def test_saves_two_tensors_where_the_composite_saves_more():
    """What makes it 'fused' on an eager GPU too: the autograd graph keeps x and the scale only."""
    saved = []

    def pack(t):
        saved.append(t)
        return t

    x = _x((2, 8, 5, 5)).detach().float().requires_grad_()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        lrn_across(x, 5, 1e-4, 0.75, 1.0)
    ours = len(saved)
    saved.clear()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        F.local_response_norm(x, 5, 1e-4, 0.75, 1.0)
    assert ours == 2 and len(saved) > ours


def test_even_size_is_refused():
    with pytest.raises(ValueError, match="must be odd"):
        lrn_across(torch.zeros(1, 4, 2, 2), 4)
