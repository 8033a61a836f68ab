"""The jigsaw fork's own layer: MergeData (jps++), which swaps tiles between two puzzles."""
import torch

from ...run.runtime import generator

from .. import caffe_pb2 as pb  # noqa: F401 (annotations)
from .base import BuildContext, Layer, Shapes, Tops, register


@register("MergeData")
class MergeData(Layer):
    """Bottoms: T tiles of the puzzles, then T tiles of second puzzles; tops: T tiles and `sub_num`.

    Per item, rand() % max_substitute + min_substitute tiles at distinct random positions are replaced
    by the second puzzle's tiles from distinct random positions (merge_data_layer.cpp). Draws come
    from the layer's generator (seeded with the net's seed), or from `plan`: an (N, T) int64 tensor,
    -1 to keep a tile, else the position of the second puzzle's tile that replaces it. Like the
    fork's layer it passes no gradient back (its Backward is empty)."""

    def __init__(self, lp: "pb.LayerParameter", shapes: Shapes, ctx: BuildContext) -> None:
        super().__init__(lp, shapes, ctx)
        self.tiles = len(lp.top) - 1
        if self.tiles < 1 or len(shapes) != 2 * self.tiles:
            self.fail(f"needs 2*T bottoms for T tile tops plus sub_num; has {len(shapes)} bottoms and "
                      f"{len(lp.top)} tops")
        if any(s != shapes[0] for s in shapes):
            self.fail(f"all bottoms must have one shape, got {sorted({tuple(s) for s in shapes})}")
        p = lp.merge_data_param
        self.low, self.high = p.min_substitute, p.max_substitute
        if self.high < 1 or self.low < 0 or self.low + self.high - 1 > self.tiles:
            self.fail(f"min_substitute {self.low} / max_substitute {self.high}: need max >= 1 and "
                      f"at most {self.tiles} substitutions (the fork divides by max, and loops forever "
                      "past T)")
        self.generator = generator(getattr(ctx, "seed", None) or 0)
        self.plan = None

    def out_shapes(self, shapes: Shapes) -> Shapes:
        return [shapes[0]] * self.tiles + [torch.Size((shapes[0][0], 1))]

    def draw_plan(self, n: int) -> torch.Tensor:
        g, t = self.generator, self.tiles
        count = torch.randint(0, self.high, (n,), generator=g) + self.low
        where = torch.rand(n, t, generator=g).argsort(1)
        source = torch.rand(n, t, generator=g).argsort(1)
        plan = torch.full((n, t), -1, dtype=torch.long)
        return plan.scatter_(1, where, torch.where(torch.arange(t)[None] < count[:, None], source, -1))

    def forward(self, *bottoms: torch.Tensor) -> Tops:
        t, n = self.tiles, bottoms[0].shape[0]
        plan = self.plan if self.plan is not None else self.draw_plan(n)
        if tuple(plan.shape) != (n, t):
            self.fail(f"plan must be ({n}, {t}), got {tuple(plan.shape)}")
        plan = plan.to(bottoms[0].device)
        own = torch.stack([b.detach() for b in bottoms[:t]])        # (T, N, ...)
        other = torch.stack([b.detach() for b in bottoms[t:]])
        items = torch.arange(n, device=plan.device)
        tops = []
        for i in range(t):
            swap = (plan[:, i] >= 0).reshape(n, *([1] * (own.dim() - 2)))
            tops.append(torch.where(swap, other[plan[:, i].clamp_min(0), items], own[i]))
        sub_num = (plan >= 0).sum(1, keepdim=True).to(bottoms[0].dtype)
        return (*tops, sub_num)
