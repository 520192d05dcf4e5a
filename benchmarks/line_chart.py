"""Line charts as standalone SVG, for the curves a benchmark measures (k-NN accuracy against epochs and
minutes): panels side by side, each with its polylines, dashed horizontal reference lines (a baseline's
level) and a legend, readable in a browser or on GitHub without a plotting library."""
import math
from dataclasses import dataclass, field
from xml.sax.saxutils import escape

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#7f7f7f")
PANEL_W, PANEL_H, MARGIN = 420, 300, (46, 16, 40, 56)  # one panel; the plot area's left, right, top, bottom


@dataclass
class Panel:
    title: str
    x_label: str
    y_label: str
    lines: list = field(default_factory=list)  # (label, [(x, y), ...]) drawn with markers
    refs: list = field(default_factory=list)  # (label, y): a dashed line across the panel

    def add_line(self, label, points):
        if points:
            self.lines.append((label, sorted(points)))

    def add_ref(self, label, y):
        self.refs.append((label, y))


def nice_ticks(lo, hi, count=5):
    """About `count` round tick values covering [lo, hi] (steps of 1, 2 or 5 times a power of ten)."""
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(lo / step) * step
    return [round(first + i * step, 10) for i in range(int(math.ceil((hi - first) / step - 1e-9)) + 1)]


def _panel_svg(panel, colours):
    """The SVG elements of one panel, in its own coordinates (0..PANEL_W, 0..PANEL_H); colours {label: colour}."""
    left, right, top, bottom = MARGIN
    xs = [x for _, pts in panel.lines for x, _ in pts] or [0, 1]
    ys = [y for _, pts in panel.lines for _, y in pts] + [y for _, y in panel.refs] or [0, 1]
    x_ticks, y_ticks = nice_ticks(min(0, min(xs)), max(xs)), nice_ticks(min(ys), max(ys))
    x0, x1, y0, y1 = x_ticks[0], x_ticks[-1], y_ticks[0], y_ticks[-1]
    w, h = PANEL_W - left - right, PANEL_H - top - bottom

    def px(x):
        return left + (x - x0) / (x1 - x0) * w

    def py(y):
        return top + h - (y - y0) / (y1 - y0) * h

    out = [f'<text x="{left + w / 2}" y="{top - 24}" text-anchor="middle" font-weight="bold">'
           f'{escape(panel.title)}</text>',
           f'<rect x="{left}" y="{top}" width="{w}" height="{h}" fill="none" stroke="#444"/>']
    for t in x_ticks:
        out.append(f'<line x1="{px(t):.1f}" y1="{top}" x2="{px(t):.1f}" y2="{top + h}" stroke="#eee"/>'
                   f'<text x="{px(t):.1f}" y="{top + h + 14}" text-anchor="middle">{t:g}</text>')
    for t in y_ticks:
        out.append(f'<line x1="{left}" y1="{py(t):.1f}" x2="{left + w}" y2="{py(t):.1f}" stroke="#eee"/>'
                   f'<text x="{left - 4}" y="{py(t) + 4:.1f}" text-anchor="end">{t:g}</text>')
    out.append(f'<text x="{left + w / 2}" y="{top + h + 30}" text-anchor="middle">{escape(panel.x_label)}</text>')
    out.append(f'<text transform="translate(12 {top + h / 2}) rotate(-90)" text-anchor="middle">'
               f'{escape(panel.y_label)}</text>')
    for label, y in panel.refs:
        out.append(f'<line x1="{left}" y1="{py(y):.1f}" x2="{left + w}" y2="{py(y):.1f}" stroke="{colours[label]}" '
                   f'stroke-dasharray="5 4"/>')
    for label, pts in panel.lines:
        colour = colours[label]
        coords = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
        out.append(f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="1.8"/>')
        out += [f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="2.2" fill="{colour}"/>' for x, y in pts]
    return out


def write_svg(panels, path, caption=""):
    """Write the panels side by side, one legend under them (the panels share their lines' labels and
    colours), and an optional caption line, as one SVG file at path."""
    labels = list(dict.fromkeys([label for p in panels for label, _ in p.lines] +
                                [label for p in panels for label, _ in p.refs]))
    dashed = {label for p in panels for label, _ in p.refs}
    colours = {label: COLOURS[i % len(COLOURS)] for i, label in enumerate(labels)}
    legend_rows = math.ceil(len(labels) / 2)
    width, height = PANEL_W * len(panels), PANEL_H + 18 * legend_rows + (20 if caption else 0)
    body = []
    for i, panel in enumerate(panels):
        body.append(f'<g transform="translate({i * PANEL_W} 0)">')
        body += _panel_svg(panel, colours)
        body.append("</g>")
    for i, label in enumerate(labels):
        x, y = 20 + (i % 2) * width / 2, PANEL_H + 18 * (i // 2)
        style = ' stroke-dasharray="5 4"' if label in dashed else ' stroke-width="1.8"'
        body.append(f'<line x1="{x}" y1="{y - 4}" x2="{x + 24}" y2="{y - 4}" stroke="{colours[label]}"{style}/>'
                    f'<text x="{x + 30}" y="{y}">{escape(label)}</text>')
    if caption:
        body.append(f'<text x="20" y="{height - 6}" fill="#555">{escape(caption)}</text>')
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
           f'<rect width="{width}" height="{height}" fill="white"/>', *body, "</svg>", ""]
    with open(path, "w") as f:
        f.write("\n".join(svg))
