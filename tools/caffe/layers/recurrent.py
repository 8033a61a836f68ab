"""Recurrent layers as Caffe unrolls them: LSTMUnit (one LSTM step), LSTM and RNN (recurrent_layer.cpp)."""
import math

from typing import Any, Tuple

import torch

from .. import caffe_pb2 as pb  # noqa: F401 (annotations)
from .base import BuildContext, Layer, Shapes, Tops, register


@register("LSTMUnit")
class LSTMUnit(Layer):
    """(c_prev (1, N, H), gates (1, N, 4H) in the order i, f, o, g, cont (1, N)) -> (c, h):
    c = cont * sigmoid(f) * c_prev + sigmoid(i) * tanh(g), h = sigmoid(o) * tanh(c). A zero `cont`
    starts a new sequence; Caffe does not backpropagate to it."""

    def __init__(self, lp: "pb.LayerParameter", shapes: Shapes, ctx: BuildContext) -> None:
        super().__init__(lp, shapes, ctx)
        self.check_bottoms(shapes, 3, 3)
        c, x, cont = (tuple(s) for s in shapes)
        if len(c) != 3 or len(x) != 3 or len(cont) != 2 or c[0] != 1 or x[0] != 1 or cont[0] != 1:
            self.fail(f"expects c_prev (1, N, H), gates (1, N, 4H) and cont (1, N); got {c}, {x}, {cont}")
        if x[1] != c[1] or cont[1] != c[1] or x[2] != 4 * c[2]:
            self.fail(f"gates {x} must be (1, {c[1]}, {4 * c[2]}) and cont (1, {c[1]}) for c_prev {c}")
        self.hidden = c[2]

    def out_shapes(self, shapes: Shapes) -> Shapes:
        return [tuple(shapes[0]), tuple(shapes[0])]

    def forward(self, c_prev: torch.Tensor, x: torch.Tensor, cont: torch.Tensor) -> Tops:
        i, f, o, g = x.split(self.hidden, dim=2)
        f = cont.detach()[:, :, None] * torch.sigmoid(f)
        c = f * c_prev + torch.sigmoid(i) * torch.tanh(g)
        return c, torch.sigmoid(o) * torch.tanh(c)


class _Recurrent(Layer):
    """What RNN and LSTM share (recurrent_layer.cpp): bottoms x (T, N, ...), cont (T, N), an optional static
    input x_static (N, ...) and, with expose_hidden, the initial states; the learnable blobs in the order of
    Caffe's unrolled net."""
    states = 1  # recurrent blobs: h (RNN), h and c (LSTM)
    gates = 1   # outputs of the hidden transforms per unit

    def __init__(self, lp: "pb.LayerParameter", shapes: Shapes, ctx: BuildContext) -> None:
        super().__init__(lp, shapes, ctx)
        p = lp.recurrent_param
        if not p.num_output:
            self.fail("recurrent_param.num_output must be positive")
        self.hidden, self.expose = p.num_output, p.expose_hidden
        extra = self.states if self.expose else 0
        self.check_bottoms(shapes, 2 + extra, 3 + extra)
        self.static = len(shapes) == 3 + extra
        x, cont = tuple(shapes[0]), tuple(shapes[1])
        if len(x) < 3 or cont != x[:2]:
            self.fail(f"expects x (T, N, ...) and cont (T, N); got {x} and {cont}")
        self.t, self.n = x[0], x[1]
        width = self.gates * self.hidden
        for i in range(extra):
            if tuple(shapes[-extra + i]) != (1, self.n, self.hidden):
                self.fail(f"initial state {i} must be (1, {self.n}, {self.hidden}), got {tuple(shapes[-extra + i])}")
        self.make_params(ctx, p, width, math.prod(x[2:]), math.prod(shapes[2][1:]) if self.static else 0)

    def make_params(self, ctx: BuildContext, p: Any, width: int, d: int, d_static: int) -> None:
        raise NotImplementedError

    def out_shapes(self, shapes: Shapes) -> Shapes:
        state = (1, self.n, self.hidden)
        return [(self.t, self.n, self.hidden)] + [state] * (self.states if self.expose else 0)

    def _inputs(self, xs):
        x, cont = xs[0], xs[1].detach()
        static = xs[2] if self.static else None
        # recurrent_layer.cpp shares only the data of exposed initial states (ShareData, no ShareDiff): no
        # gradient reaches h0 / c0, "we can't backpropagate across batches"
        initial = [s.detach() for s in xs[len(xs) - self.states:]] if self.expose else \
            [x.new_zeros(1, self.n, self.hidden)] * self.states
        return x.reshape(self.t, self.n, -1), cont, static, [s[0] for s in initial]

    @staticmethod
    def _final(*states: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """The exposed final states: their data only; Caffe zeroes the diffs of the recurrent outputs, so
        nothing given to hT / cT flows back (the sequence output carries the gradient)."""
        return tuple(s.detach()[None] for s in states)


@register("LSTM")
class LSTM(_Recurrent):
    """Caffe's LSTM as its unrolled net computes it: blobs W_xc (4H, D), b_c (4H), [W_xc_static (4H, D_s)],
    W_hc (4H, H); gates_t = W_hc (cont_t h_{t-1}) + W_xc x_t + b_c [+ W_xc_static x_static], then LSTMUnit."""
    states, gates = 2, 4

    def make_params(self, ctx: BuildContext, p: Any, width: int, d: int, d_static: int) -> None:
        names = ["W_xc", "b_c"] + (["W_xc_static"] if self.static else []) + ["W_hc"]
        shapes = [(width, d), (width,)] + ([(width, d_static)] if self.static else []) + [(width, self.hidden)]
        for i, (name, shape) in enumerate(zip(names, shapes)):
            ctx.param(self, name, i, shape, p.bias_filler if name.startswith("b_") else p.weight_filler)
        self.blob_names = tuple(names)

    def forward(self, *xs: torch.Tensor) -> Tops:
        x, cont, static, (h, c) = self._inputs(xs)
        wx = x @ self.W_xc.t() + self.b_c
        if static is not None:
            wx = wx + (static.reshape(self.n, -1) @ self.W_xc_static.t())[None]
        out = []
        for t in range(self.t):
            gates = wx[t] + (cont[t][:, None] * h) @ self.W_hc.t()
            i, f, o, g = gates.split(self.hidden, dim=1)
            c = cont[t][:, None] * torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            out.append(h)
        tops = (torch.stack(out),)
        return tops + (self._final(h, c) if self.expose else ())


@register("RNN")
class RNN(_Recurrent):
    """Caffe's RNN as its unrolled net computes it: blobs W_xh (H, D), b_h (H), [W_xh_static (H, D_s)],
    W_hh (H, H), W_ho (H, H), b_o (H); h_t = tanh(W_hh (cont_t h_{t-1}) + W_xh x_t + b_h [+ static]),
    o_t = tanh(W_ho h_t + b_o)."""

    def make_params(self, ctx: BuildContext, p: Any, width: int, d: int, d_static: int) -> None:
        names = ["W_xh", "b_h"] + (["W_xh_static"] if self.static else []) + ["W_hh", "W_ho", "b_o"]
        hh = (self.hidden, self.hidden)
        shapes = [(width, d), (width,)] + ([(width, d_static)] if self.static else []) + [hh, hh, (self.hidden,)]
        for i, (name, shape) in enumerate(zip(names, shapes)):
            ctx.param(self, name, i, shape, p.bias_filler if name.startswith("b_") else p.weight_filler)
        self.blob_names = tuple(names)

    def forward(self, *xs: torch.Tensor) -> Tops:
        x, cont, static, (h,) = self._inputs(xs)
        wx = x @ self.W_xh.t() + self.b_h
        if static is not None:
            wx = wx + (static.reshape(self.n, -1) @ self.W_xh_static.t())[None]
        out = []
        for t in range(self.t):
            h = torch.tanh((cont[t][:, None] * h) @ self.W_hh.t() + wx[t])
            out.append(torch.tanh(h @ self.W_ho.t() + self.b_o))
        tops = (torch.stack(out),)
        return tops + (self._final(h) if self.expose else ())
