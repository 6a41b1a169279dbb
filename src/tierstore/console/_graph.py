"""Geometry for the console's SVG drawings (docs/console.md: charts and graphs are drawn on the
server): a line chart of one metric against the step, and a layered layout of a lineage graph.

Only numbers and the caller's own strings come out; the templates (``_chart.html``,
``_lineage.html``) write the SVG, so every label is escaped by the template engine like any text."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["Chart", "Edge", "Graph", "Node", "layered", "line_chart"]

# chart area: the plot is inset by the axis margins
_W, _H = 640, 260
_LEFT, _RIGHT, _TOP, _BOTTOM = 64, 16, 12, 36


@dataclass(frozen=True, slots=True)
class Point:
    x: float
    y: float
    step: int
    value: float


@dataclass(frozen=True, slots=True)
class Tick:
    at: float  # pixel position along its axis
    label: str


@dataclass(slots=True)
class Chart:
    width: int
    height: int
    points: list[Point]
    x_ticks: list[Tick]
    y_ticks: list[Tick]
    plot: tuple[int, int, int, int]  # left, top, right, bottom

    @property
    def polyline(self) -> str:
        return " ".join(f"{p.x:.1f},{p.y:.1f}" for p in self.points)


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round values covering [lo, hi]."""
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    out = []
    v = first
    while v <= hi + step * 1e-9:
        out.append(round(v, 12))
        v += step
    return out


def _label(v: float) -> str:
    return f"{v:.4g}"


def line_chart(series: list[tuple[int, float]]) -> Chart:
    """``series``: (step, value) pairs (finite values; any order) -> pixel points in step order."""
    pts = sorted((s, v) for s, v in series if math.isfinite(v))
    left, top, right, bottom = _LEFT, _TOP, _W - _RIGHT, _H - _BOTTOM
    if not pts:
        return Chart(_W, _H, [], [], [], (left, top, right, bottom))
    s_lo, s_hi = pts[0][0], pts[-1][0]
    v_lo, v_hi = min(v for _, v in pts), max(v for _, v in pts)
    if s_hi == s_lo:
        s_lo, s_hi = s_lo - 1, s_hi + 1
    if v_hi == v_lo:
        pad = abs(v_lo) * 0.1 or 1.0
        v_lo, v_hi = v_lo - pad, v_hi + pad

    def x(s: float) -> float:
        return left + (s - s_lo) / (s_hi - s_lo) * (right - left)

    def y(v: float) -> float:
        return bottom - (v - v_lo) / (v_hi - v_lo) * (bottom - top)

    points = [Point(x(s), y(v), s, v) for s, v in pts]
    x_ticks = [Tick(x(t), _label(t)) for t in _ticks(s_lo, s_hi) if t == int(t)]
    y_ticks = [Tick(y(t), _label(t)) for t in _ticks(v_lo, v_hi, 4)]
    return Chart(_W, _H, points, x_ticks, y_ticks, (left, top, right, bottom))


# --- the lineage graph ---------------------------------------------------------------------
NODE_W, NODE_H = 200, 46
_COL_GAP, _ROW_GAP, _PAD = 56, 18, 8


@dataclass(slots=True)
class Node:
    """A node: ``id`` unique in its graph, ``kind`` (model, checkpoint, dataset, source,
    missing), two lines of text, ``href`` a console URL or empty, ``layer`` its column."""

    id: str
    kind: str
    title: str
    detail: str = ""
    href: str = ""
    layer: int = 0
    x: float = 0.0
    y: float = 0.0

    @property
    def short_title(self) -> str:
        return _clip(self.title, 26)

    @property
    def short_detail(self) -> str:
        return _clip(self.detail, 34)


@dataclass(frozen=True, slots=True)
class Edge:
    src: str
    dst: str


@dataclass(slots=True)
class Graph:
    nodes: list[Node] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)
    width: int = 0
    height: int = 0
    paths: list[str] = field(default_factory=list)  # one SVG path per edge, in edge order

    def add(self, node: Node) -> Node:
        """``node``, or the node already added with its id (a DAG: a dataset two checkpoints share)."""
        for n in self.nodes:
            if n.id == node.id:
                return n
        self.nodes.append(node)
        return node

    def link(self, src: Node, dst: Node) -> None:
        edge = Edge(src.id, dst.id)
        if edge not in self.edges:
            self.edges.append(edge)


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def layered(graph: Graph) -> Graph:
    """Lay ``graph`` out left to right: a node's column is its longest path from a root (so every
    edge goes rightwards), nodes of a column stacked in insertion order, edges as cubic curves."""
    by_id = {n.id: n for n in graph.nodes}
    incoming: dict[str, list[str]] = {n.id: [] for n in graph.nodes}
    for e in graph.edges:
        incoming[e.dst].append(e.src)
    depth: dict[str, int] = {}

    def layer_of(node_id: str, seen: frozenset[str] = frozenset()) -> int:
        if node_id not in depth:
            parents = [p for p in incoming[node_id] if p not in seen]  # a cycle is cut, never followed
            depth[node_id] = 1 + max((layer_of(p, seen | {node_id}) for p in parents), default=-1)
        return depth[node_id]

    columns: dict[int, list[Node]] = {}
    for n in graph.nodes:
        n.layer = layer_of(n.id)
        columns.setdefault(n.layer, []).append(n)
    tallest = max((len(c) for c in columns.values()), default=0)
    graph.height = int(2 * _PAD + tallest * NODE_H + max(0, tallest - 1) * _ROW_GAP)
    graph.width = int(2 * _PAD + len(columns) * NODE_W + max(0, len(columns) - 1) * _COL_GAP)
    for layer, col in columns.items():
        used = len(col) * NODE_H + (len(col) - 1) * _ROW_GAP
        top = (graph.height - used) / 2
        for i, n in enumerate(col):
            n.x = _PAD + layer * (NODE_W + _COL_GAP)
            n.y = top + i * (NODE_H + _ROW_GAP)
    graph.paths = []
    for e in graph.edges:
        a, b = by_id[e.src], by_id[e.dst]
        x1, y1 = a.x + NODE_W, a.y + NODE_H / 2
        x2, y2 = b.x, b.y + NODE_H / 2
        mid = (x1 + x2) / 2
        graph.paths.append(f"M{x1:.1f},{y1:.1f} C{mid:.1f},{y1:.1f} {mid:.1f},{y2:.1f} {x2:.1f},{y2:.1f}")
    return graph
