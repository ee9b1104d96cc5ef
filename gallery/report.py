"""HTML report of a served-path evaluation, as one self-contained file.

``write_report(evaluation, dataset, PATH, source=ReportSource(...))`` writes one HTML
file (``PATH/index.html``, or ``PATH`` itself when it ends in ``.html``) with every image
embedded as a ``data:`` URI, no scripts and no external references, so it can be mailed
or archived as it is. It holds:

* what was evaluated: the served model and the SHA-256 of its checkpoint, the export
  directory (when the server reports it), runtime, dataset spec, server and date;
* the summary: mAP, mINP and CMC ranks (served, offline), the served/offline verdict;
* the CMC curve;
* a query camera x gallery camera table of rank-1 and mAP (see :func:`camera_table`);
* the worst queries (lowest AP) with their rank lists, and rank lists of sample queries.

A rank list is the query image (blue border) then its top 10 in the served ranking
(green border: same identity, red: another identity), after the protocol's removal of
junk and same-identity same-camera gallery images, like the visualisers of the research
toolboxes.
"""

from __future__ import annotations

import base64
import html
import io
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from PIL import Image, ImageDraw, ImageOps

from gallery.evaluate import (
    CameraPair,
    Evaluation,
    QueryOutcome,
    served_camera_pairs,
    served_query_scores,
    worst_queries,
)
from reid.data.base import JUNK_PID, ReIDDataset, label_arrays
from reid.metrics import RankResult
from reid_client.schemas import ModelInfo

TILE = (64, 128)  # width, height of one image in a rank list
BORDER = 4
CAPTION = 16
COLOURS = {"query": (40, 90, 220), "match": (20, 170, 60), "miss": (220, 40, 40)}
REPORT_NAME = "index.html"


@dataclass
class ReportSource:
    """What the report evaluates: the served model (``GET /v1/model``), dataset, server."""

    dataset_spec: str | None = None
    server: str | None = None
    model: ModelInfo | None = None
    offline_export: str | None = None
    """The export the offline reference was computed with (``None``: no reference)."""
    created: datetime = field(default_factory=lambda: datetime.now(UTC))


# ----------------------------------------------------------------------------- images


def ranked_list(
    distmat: np.ndarray, query: int, dataset: ReIDDataset, top: int = 10
) -> list[tuple[int, float]]:
    """``(gallery index, score)`` of a query's top ``top`` after the protocol's removals."""
    q_pid, q_cam = dataset.query[query].pid, dataset.query[query].camid
    g_pids, g_cams = label_arrays(dataset.gallery)
    row = distmat[query]
    order = np.argsort(row, kind="stable")
    order = order[np.isfinite(row[order])]
    keep = ~(((g_pids[order] == q_pid) & (g_cams[order] == q_cam)) | (g_pids[order] == JUNK_PID))
    return [(int(i), 1.0 - float(row[i])) for i in order[keep][:top]]


def sample_queries(dataset: ReIDDataset, count: int = 10) -> list[int]:
    """``count`` query indices spread evenly over the query set (labelled ones only)."""
    labelled = [i for i, r in enumerate(dataset.query) if r.pid is not None and r.pid > 0]
    if len(labelled) <= count:
        return labelled
    picks = np.linspace(0, len(labelled) - 1, count).round().astype(int)
    return [labelled[i] for i in picks]


def _tile(path: Path, colour: tuple[int, int, int], caption: str) -> Image.Image:
    with Image.open(path) as image:
        thumb = ImageOps.fit(image.convert("RGB"), TILE)
    framed = ImageOps.expand(thumb, border=BORDER, fill=colour)
    tile = Image.new("RGB", (framed.width, framed.height + CAPTION), "white")
    tile.paste(framed, (0, 0))
    ImageDraw.Draw(tile).text((2, framed.height + 2), caption, fill=(0, 0, 0))
    return tile


def draw_rank_list(dataset: ReIDDataset, query: int, ranked: list[tuple[int, float]]) -> bytes:
    """One row as PNG bytes: the query then its ranked gallery images with coloured borders."""
    record = dataset.query[query]
    tiles = [_tile(record.path, COLOURS["query"], f"query {record.pid}")]
    for gallery_index, score in ranked:
        same = dataset.gallery[gallery_index].pid == record.pid
        tiles.append(
            _tile(
                dataset.gallery[gallery_index].path,
                COLOURS["match" if same else "miss"],
                f"{score:.3f}",
            )
        )
    gap = 8
    width = sum(t.width for t in tiles) + gap * len(tiles)
    canvas = Image.new("RGB", (width, tiles[0].height), "white")
    x = 0
    for number, tile in enumerate(tiles):
        canvas.paste(tile, (x, 0))
        x += tile.width + (2 * gap if number == 0 else gap)
    out = io.BytesIO()
    canvas.save(out, format="PNG")
    return out.getvalue()


def plot_cmc(evaluation: Evaluation) -> bytes:
    """CMC curves (served, and offline when computed) as PNG bytes."""
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    curves = [("served", evaluation.served, "-")]
    if evaluation.offline is not None:
        curves.append(("offline", evaluation.offline, "--"))
    if evaluation.offline_full is not None:
        curves.append(("offline, full ranking", evaluation.offline_full, ":"))
    for label, result, style in curves:
        ranks = np.arange(1, len(result.cmc) + 1)
        ax.plot(ranks, 100 * result.cmc, style, label=f"{label} (mAP {100 * result.mAP:.1f}%)")
    ax.set_xlabel("rank")
    ax.set_ylabel("matching rate (%)")
    ax.set_ylim(0, 100)
    ax.set_title("CMC" + (f" (top-{evaluation.k} ranking)" if evaluation.k else ""))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png")
    plt.close(fig)
    return out.getvalue()


def data_uri(png: bytes) -> str:
    """``data:image/png;base64,...``: an image inside the HTML file."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _img(png: bytes, alt: str) -> str:
    return f'<img src="{data_uri(png)}" alt="{html.escape(alt)}">'


# ----------------------------------------------------------------------------- tables


def _esc(value: object) -> str:
    return html.escape(str(value))


def _pct(value: float) -> str:
    return f"{100 * value:.2f}"


def _result_cells(result: RankResult | None) -> list[str]:
    if result is None:
        return ["-"] * 6
    values = [result.mAP, result.mINP, *(result.rank(k) for k in (1, 5, 10, 20))]
    return [_pct(v) for v in values]


def summary_table(evaluation: Evaluation) -> str:
    """The served / offline table (mAP, mINP, rank-1/5/10/20 in %) as HTML."""
    header = ["", "mAP", "mINP", "R1", "R5", "R10", "R20"]
    rows = [["served", *_result_cells(evaluation.served)]]
    if evaluation.offline is not None:
        rows.append(["offline", *_result_cells(evaluation.offline)])
    if evaluation.offline_full is not None:
        rows.append(["offline, full ranking", *_result_cells(evaluation.offline_full)])
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="summary"><tr>{head}</tr>{body}</table>'


def _info_rows(evaluation: Evaluation, dataset: ReIDDataset, source: ReportSource) -> list:
    model = source.model.model if source.model is not None else None
    runtime = source.model.runtime if source.model is not None else None
    ids = {r.pid for r in (*dataset.query, *dataset.gallery) if r.pid is not None and r.pid > 0}
    cameras = sorted({r.camid for r in (*dataset.query, *dataset.gallery)})
    not_reported = "not reported by the server"
    rows = [
        ("dataset", f"{dataset.name} ({source.dataset_spec or 'spec not given'})"),
        (
            "queries / gallery",
            f"{len(dataset.query)} queries, {len(dataset.gallery)} gallery images, "
            f"{len(ids)} identities, cameras {', '.join(map(str, cameras))}",
        ),
        ("served model", model.name if model else not_reported),
        ("method", (model.method or "-") if model else not_reported),
        (
            "checkpoint SHA-256",
            (model.checkpoint_sha256 or "not recorded in the export's manifest")
            if model
            else not_reported,
        ),
        (
            "export directory",
            (model.export_dir or f"{not_reported} (start it with --expose-export-dir)")
            if model
            else not_reported,
        ),
        ("export created", (model.created or "-") if model else not_reported),
        ("runtime", f"{runtime.runtime} on {runtime.device}" if runtime else not_reported),
        ("server", source.server or "-"),
        (
            "ranking",
            "full ranking" if evaluation.k is None else f"top-{evaluation.k} (truncated)",
        ),
        (
            "offline reference",
            source.offline_export
            or ("computed (export not named)" if evaluation.offline is not None else "none"),
        ),
        ("report date", source.created.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")),
    ]
    return rows


def info_table(evaluation: Evaluation, dataset: ReIDDataset, source: ReportSource) -> str:
    """What was evaluated, as a two-column HTML table."""
    body = "".join(
        f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>"
        for k, v in _info_rows(evaluation, dataset, source)
    )
    return f'<table class="info">{body}</table>'


def camera_table(pairs: list[CameraPair]) -> str:
    """Rows: query cameras; columns: all gallery cameras, then each gallery camera.

    A cell holds rank-1 and mAP (%) of that camera's queries ranked over that part of the
    gallery, and how many of its queries had a valid match there; ``-`` on the diagonal
    (same camera: the protocol removes every match) and where no query had a match.
    Each cell carries ``data-query-camera``, ``data-gallery-camera`` (``all``),
    ``data-rank1`` and ``data-map`` (fractions) for machine reading.
    """
    q_cams = sorted({p.query_camera for p in pairs})
    g_cams = sorted({p.gallery_camera for p in pairs if p.gallery_camera is not None})
    by_key = {(p.query_camera, p.gallery_camera): p for p in pairs}
    head = "<th>query camera (queries)</th><th>all gallery cameras</th>" + "".join(
        f"<th>gallery camera {g}</th>" for g in g_cams
    )
    rows = []
    for q in q_cams:
        count = next(p.num_queries for p in pairs if p.query_camera == q)
        cells = [f"<th>camera {q} ({count})</th>"]
        for g in [None, *g_cams]:
            pair = by_key.get((q, g))
            if pair is None or pair.result is None:
                cells.append('<td class="na">-</td>')
                continue
            r = pair.result
            label = "all" if g is None else str(g)
            cells.append(
                f'<td data-query-camera="{q}" data-gallery-camera="{label}" '
                f'data-rank1="{r.rank(1):.6f}" data-map="{r.mAP:.6f}">'
                f"R1 {_pct(r.rank(1))}<br>mAP {_pct(r.mAP)}"
                f"<br><small>{r.num_valid_queries} valid</small></td>"
            )
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table class="cameras"><tr>{head}</tr>{"".join(rows)}</table>'


def _first_rank_text(rank: float) -> str:
    return "not returned" if not math.isfinite(rank) else str(int(rank))


def worst_table(outcomes: list[QueryOutcome], dataset: ReIDDataset) -> str:
    """The worst queries: AP, INP, first-match rank, file; ascending AP."""
    head = "".join(
        f"<th>{h}</th>"
        for h in ("#", "query", "file", "identity", "camera", "AP", "INP", "first match at")
    )
    rows = []
    for number, o in enumerate(outcomes, 1):
        record = dataset.query[o.query]
        cells = [
            number,
            o.query,
            record.path.name,
            record.pid,
            record.camid,
            _pct(o.ap),
            _pct(o.inp),
            _first_rank_text(o.first_rank),
        ]
        rows.append(
            f'<tr class="worst" data-query="{o.query}" data-ap="{o.ap:.6f}">'
            + "".join(f"<td>{_esc(c)}</td>" for c in cells)
            + "</tr>"
        )
    return f'<table class="worst"><tr>{head}</tr>{"".join(rows)}</table>'


def _rank_list_block(evaluation: Evaluation, dataset: ReIDDataset, query: int, note: str) -> str:
    assert evaluation.rankings is not None
    ranked = ranked_list(evaluation.rankings.distmat, query, dataset)
    alt = f"query {query} ({dataset.query[query].path.name}){note}"
    image = _img(draw_rank_list(dataset, query, ranked), alt)
    return f'<p class="ranklist">{html.escape(alt)}<br>{image}</p>'


# ----------------------------------------------------------------------------- the page


STYLE = """body{font-family:sans-serif;margin:2em;max-width:110em}
td,th{padding:4px 10px;text-align:right;vertical-align:top}
table{border-collapse:collapse;margin-bottom:1em}tr:nth-child(even){background:#f2f2f2}
table.info th{text-align:left}table.info td{text-align:left;font-family:monospace}
td.na{color:#999;text-align:center}small{color:#666}"""


def report_path(path: str | Path) -> Path:
    """The file ``--report PATH`` writes: ``PATH`` when it ends in ``.html``, else
    ``PATH/index.html``."""
    path = Path(path)
    return path if path.suffix.lower() in (".html", ".htm") else path / REPORT_NAME


def render_report(
    evaluation: Evaluation,
    dataset: ReIDDataset,
    *,
    source: ReportSource | None = None,
    num_queries: int = 10,
    num_worst: int = 10,
) -> str:
    """The whole report as one HTML string (images embedded)."""
    source = source or ReportSource()
    diff = evaluation.max_diff
    verdict = (
        "no offline reference"
        if diff is None
        else f"largest |served - offline| = {diff:.2e} "
        f"({'within' if evaluation.passed else 'OVER'} the tolerance 1e-4)"
    )
    notes = "".join(f"<li>{_esc(n)}</li>" for n in evaluation.notes)
    served = evaluation.served
    headline = (
        f"Served: mAP {_pct(served.mAP)}%, mINP {_pct(served.mINP)}%, rank-1 "
        f"{_pct(served.rank(1))}% over {served.num_valid_queries} valid queries "
        f"({served.num_skipped_queries} skipped: no match in another camera)."
    )
    sections = []
    if evaluation.rankings is not None:
        pairs = served_camera_pairs(evaluation, dataset)
        sections.append(
            f"""<h2>Per camera pair</h2>
<p>Cross-camera shift is the core difficulty of re-identification. For each query camera
<i>q</i> and gallery camera <i>g</i> &ne; <i>q</i>: the queries seen by <i>q</i>, each ranked
over the gallery entries seen by <i>g</i> only (the served ranking restricted to camera
<i>g</i>, what a search with a camera filter <i>g</i> returns), evaluated with the same
protocol; rank-1 is the fraction of those queries whose best-ranked entry of camera <i>g</i>
is the same person, mAP the mean of their average precisions there. A query whose person
camera <i>g</i> never saw has no valid match in that cell and does not count in it
("valid" says how many did). "All gallery cameras" is the ordinary evaluation of the
queries of camera <i>q</i>. The diagonal is empty: the protocol removes the same person
seen by the query's own camera. Scores in %.</p>
{camera_table(pairs)}"""
        )
        outcomes = worst_queries(served_query_scores(evaluation, dataset), num_worst)
        blocks = "".join(
            _rank_list_block(
                evaluation,
                dataset,
                o.query,
                f": AP {_pct(o.ap)}%, first match at {_first_rank_text(o.first_rank)}",
            )
            for o in outcomes
        )
        sections.append(
            f"""<h2>Worst queries (lowest AP)</h2>
<p>The {len(outcomes)} valid queries with the lowest average precision in the served
ranking, lowest first; "first match at" is the rank of the first correct gallery image after
the protocol's removals. Their rank lists follow (query with a blue border, then the top 10
with cosine scores; green: same identity, red: another identity).</p>
{worst_table(outcomes, dataset)}
{blocks}"""
        )
        samples = "".join(
            _rank_list_block(evaluation, dataset, q, "")
            for q in sample_queries(dataset, num_queries)
        )
        sections.append(
            f"""<h2>Rank lists of sample queries (served ranking)</h2>
<p>Queries spread evenly over the query set. Query with a blue border, then the top 10 with
their cosine scores; green border: same identity, red: another identity. Junk and
same-identity same-camera gallery images are left out, as in the evaluation protocol.</p>
{samples}"""
        )
    title = f"Served-path evaluation: {_esc(dataset.name)}"
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>{STYLE}</style></head>
<body>
<h1>{title}</h1>
<h2>What was evaluated</h2>
{info_table(evaluation, dataset, source)}
<h2>Summary</h2>
<p>{_esc(headline)}</p>
{summary_table(evaluation)}
<p>{_esc(verdict)}</p>
<p>Scores in %. mAP: mean over queries of the average precision of the ranking. mINP:
mean over queries of (number of matches) / (rank of the last match), how far down the
list the hardest match of a query lies. R<i>k</i>: fraction of queries with a match in
the top <i>k</i>.</p>
<ul>{notes}</ul>
<h2>CMC curve</h2>
{_img(plot_cmc(evaluation), "CMC curve")}
{"".join(sections)}
</body></html>
"""


def write_report(
    evaluation: Evaluation,
    dataset: ReIDDataset,
    path: str | Path,
    num_queries: int = 10,
    *,
    source: ReportSource | None = None,
    num_worst: int = 10,
) -> Path:
    """Write the report as one HTML file (see :func:`report_path`); returns its path."""
    out = report_path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    page = render_report(
        evaluation, dataset, source=source, num_queries=num_queries, num_worst=num_worst
    )
    out.write_text(page, encoding="utf-8")
    return out
