"""Recurrent building blocks: LSTMUnit, one LSTM time step as lstm_unit_layer.cpp computes it."""
import torch

from .base import Layer, register


@register("LSTMUnit")
class LSTMUnit(Layer):
    """(c_prev (1, N, H), gates (1, N, 4H) in the order i, f, o, g, cont (1, N)) -> (c, h):
    c = cont * sigmoid(f) * c_prev + sigmoid(i) * tanh(g), h = sigmoid(o) * tanh(c). A zero `cont`
    starts a new sequence; Caffe does not backpropagate to it."""

    def __init__(self, lp, shapes, ctx):
        super().__init__(lp, shapes, ctx)
        self.check_bottoms(shapes, 3, 3)
        c, x, cont = (tuple(s) for s in shapes)
        if len(c) != 3 or len(x) != 3 or len(cont) != 2 or c[0] != 1 or x[0] != 1 or cont[0] != 1:
            self.fail(f"expects c_prev (1, N, H), gates (1, N, 4H) and cont (1, N); got {c}, {x}, {cont}")
        if x[1] != c[1] or cont[1] != c[1] or x[2] != 4 * c[2]:
            self.fail(f"gates {x} must be (1, {c[1]}, {4 * c[2]}) and cont (1, {c[1]}) for c_prev {c}")
        self.hidden = c[2]

    def out_shapes(self, shapes):
        return [tuple(shapes[0]), tuple(shapes[0])]

    def forward(self, c_prev, x, cont):
        i, f, o, g = x.split(self.hidden, dim=2)
        f = cont.detach()[:, :, None] * torch.sigmoid(f)
        c = f * c_prev + torch.sigmoid(i) * torch.tanh(g)
        return c, torch.sigmoid(o) * torch.tanh(c)
