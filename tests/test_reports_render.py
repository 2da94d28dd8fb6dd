"""Token HTML and figures: everything user-visible is escaped, shading follows activation."""

from __future__ import annotations

import re

import numpy as np

from saelab.reports import figures, render

XSS = "<script>alert(1)</script>"


def _alpha(css: str) -> float:
    return float(re.search(r"rgba\(\d+,\d+,\d+,([\d.]+)\)", css).group(1))


def test_token_span__script_token_is_escaped_text():
    out = render.highlight_tokens([XSS, ' onerror="x"'], [1.0, 0.5], 1.0)
    assert "<script" not in out.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in out
    assert 'onerror="x"' not in out  # quotes in a token cannot open an attribute
    assert out.count("<span") == out.count("</span>")


def test_titles_and_labels__are_escaped():
    span = render.token_span("a", 1.0, 1.0, title='"><img src=x onerror=alert(1)>')
    assert "<img" not in span
    link = render.latent_link(7, XSS)
    assert "<script" not in link.lower() and 'href="explorer?latent=7"' in link
    head = render.heading_html(3, XSS, proxy=True, tooltip=XSS)
    assert "<script" not in head.lower() and "proxy" in head


def test_prompt_html__links_every_token_with_a_latent_and_escapes():
    out = render.prompt_html([XSS, " b", "c"], [(5, 2.0), None, (9, 1.0)], {5: XSS})
    assert "<script" not in out.lower()
    assert re.findall(r'href="explorer\?latent=(\d+)"', out) == ["5", "9"]


def test_intensity__monotone_in_activation_and_clipped():
    values = np.linspace(-1.0, 3.0, 41)
    alphas = [_alpha(render.act_colour(float(v), 2.0)) for v in values]
    assert all(a <= b for a, b in zip(alphas, alphas[1:]))
    assert alphas[0] == 0.0 and alphas[-1] == 1.0
    assert render.intensity(1.0, 2.0) == 0.5
    assert render.intensity(1.0, 0.0) == 0.0  # a dead latent shades nothing
    assert render.intensity(float("nan"), 1.0) == 0.0


def test_visible_token__marks_whitespace():
    out = render.visible_token(" a\nb\t")
    text = re.sub(r"<[^>]+>", "", out)
    assert text == "·a↵b⇥"
    assert "∅" in render.visible_token("")


def test_context_html__skips_padding_and_outlines_the_max_token():
    vocab = {1: "x", 2: "<y>", 3: "z"}
    out = render.context_html([-1, 1, 2, 3], [0.0, 0.1, 1.0, 0.2], 1.0, vocab.__getitem__, centre=2)
    assert out.count("saelab-tok") == 3
    assert "&lt;y&gt;" in out and "outline" in out


def test_logit_list_html__escaped_ranked_and_skips_padding():
    out = render.logit_list_html([1, 2, -1], [0.2, 0.5, 9.0], {1: "<b>", 2: " x"}.__getitem__, positive=True)
    assert "&lt;b&gt;" in out and "<b>" not in out.replace("<b>Promoted tokens</b>", "")
    assert out.index("x</code>") < out.index("&lt;b&gt;")  # larger effect first
    assert "+9" not in out  # the padding id -1 is not a token
    neg = render.logit_list_html([3], [-0.1], {3: '"'}.__getitem__, positive=False)
    assert "Suppressed" in neg and "&quot;" in neg


def test_figures__token_text_is_escaped_for_plotly():
    heat = figures.prompt_heatmap(["<i>", "a"], [4], np.array([[1.0, 0.0]]), {4: "<u>l</u>"})
    assert "&lt;i&gt;" in heat.data[0].x[0] and "&lt;u&gt;" in heat.data[0].y[0]


def test_feature_map__one_point_per_latent_with_its_index():
    xy = np.random.default_rng(0).normal(size=(50, 2))
    dens = np.r_[np.zeros(5), np.logspace(-5, -1, 45)]
    fig = figures.feature_map(xy, dens, np.arange(50) % 3, {2: "<b>two</b>"}, colour_by="cluster", highlight=2)
    assert list(fig.data[0].customdata) == list(range(50))
    assert fig.data[0].type == "scattergl"
    assert "&lt;b&gt;" in fig.data[0].text[2]
    hist = figures.activation_histogram([3, 2, 1, 0], 2.0)
    assert np.allclose(hist.data[0].x, [0.25, 0.75, 1.25, 1.75])


def test_density_histogram__bars_at_bin_centres():
    fig = figures.density_histogram([-6.0, -4.0, -2.0], [3, 5])
    assert list(fig.data[0].x) == [-5.0, -3.0] and list(fig.data[0].y) == [3, 5]
    assert fig.layout.xaxis.title.text == "log10 frequency"
