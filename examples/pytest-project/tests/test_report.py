"""Draws the softmax of a ramp as an SVG plot in out/: an artifact hwsched brings back."""

import pathlib

from tinyml import softmax


def test_draws_the_softmax_plot():
    ys = softmax([x / 4 for x in range(20)])
    top = max(ys)
    points = " ".join(f"{10 + i * 14},{110 - 100 * y / top:.1f}" for i, y in enumerate(ys))
    svg = (
        '<svg xmlns="http://www.w3.org/2000/svg" width="290" height="120">'
        f'<polyline fill="none" stroke="black" points="{points}"/></svg>\n'
    )
    out = pathlib.Path("out")
    out.mkdir(exist_ok=True)
    (out / "softmax.svg").write_text(svg)
    assert (out / "softmax.svg").stat().st_size > 100
