"""The console's SVG geometry without a server: the line chart's points and ticks, and the
layered lineage layout (every edge goes rightwards, nodes of a column never overlap, a shared
dataset is one node, a cycle in bad lineage records is cut rather than followed forever)."""

from __future__ import annotations

from tierstore.console._graph import NODE_H, NODE_W, Graph, Node, layered, line_chart


def test_line_chart_orders_points_by_step_and_scales_them_into_the_plot() -> None:
    chart = line_chart([(30, 0.5), (10, 2.0), (20, 1.0), (40, float("nan"))])
    assert [(p.step, p.value) for p in chart.points] == [(10, 2.0), (20, 1.0), (30, 0.5)]
    left, top, right, bottom = chart.plot
    assert chart.points[0].x == left and chart.points[-1].x == right
    assert chart.points[0].y == top and chart.points[-1].y == bottom  # the highest value at the top
    assert [t.label for t in chart.x_ticks][:1] == ["10"] and chart.y_ticks
    assert all(top <= t.at <= bottom for t in chart.y_ticks)
    single = line_chart([(5, 1.0)])  # one point: a flat range around it, not a division by zero
    assert len(single.points) == 1 and left <= single.points[0].x <= right
    assert line_chart([]).points == []


def test_layered_layout_puts_every_edge_rightwards_without_overlaps() -> None:
    g = Graph()
    model = g.add(Node("model:m@1", "model", "m@1"))
    ckpt = g.add(Node("checkpoint:c", "checkpoint", "c"))
    a = g.add(Node("dataset:a@2", "dataset", "a@2"))
    b = g.add(Node("dataset:b@1", "dataset", "b@1"))
    a1 = g.add(Node("dataset:a@1", "dataset", "a@1"))
    assert g.add(Node("dataset:a@1", "dataset", "again")) is a1  # one node per id
    for src, dst in ((model, ckpt), (ckpt, a), (ckpt, b), (a, a1), (b, a1), (a, a1)):
        g.link(src, dst)
    layered(g)
    assert len(g.edges) == 5 and len(g.paths) == 5
    by_id = {n.id: n for n in g.nodes}
    for e in g.edges:
        assert by_id[e.src].layer < by_id[e.dst].layer
    assert (model.layer, ckpt.layer, a.layer, b.layer, a1.layer) == (0, 1, 2, 2, 3)
    assert a.x == b.x and abs(a.y - b.y) >= NODE_H
    assert all(n.x >= 0 and n.x + NODE_W <= g.width and n.y >= 0 and n.y + NODE_H <= g.height for n in g.nodes)


def test_a_cycle_in_lineage_records_is_cut() -> None:
    g = Graph()
    x, y = g.add(Node("dataset:x@1", "dataset", "x")), g.add(Node("dataset:y@1", "dataset", "y"))
    g.link(x, y)
    g.link(y, x)
    layered(g)  # terminates: the walk back from x stops at x
    assert sorted([x.layer, y.layer]) == [0, 1] and len(g.paths) == 2 and x.x != y.x
