"""HTML report of a served-path evaluation: summary table, CMC curve and rank lists.

``write_report(evaluation, dataset, DIR)`` writes ``DIR/index.html`` with relative links
to ``DIR/cmc.png`` and ``DIR/ranklists/query_*.png``: one row per sample query, the query
image (blue border) then its top 10 in the served ranking (green border: same identity,
red: another identity), after the protocol's removal of junk and same-identity
same-camera gallery images, like the visualisers of the research toolboxes.
"""

from __future__ import annotations

import html
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from PIL import Image, ImageDraw, ImageOps

from gallery.evaluate import Evaluation
from reid.data.base import JUNK_PID, ReIDDataset, label_arrays
from reid.metrics import RankResult

TILE = (64, 128)  # width, height of one image in a rank list
BORDER = 4
CAPTION = 16
COLOURS = {"query": (40, 90, 220), "match": (20, 170, 60), "miss": (220, 40, 40)}


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


def draw_rank_list(
    dataset: ReIDDataset, query: int, ranked: list[tuple[int, float]], out: Path
) -> Path:
    """Save one row: the query then its ranked gallery images with coloured borders."""
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
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out)
    return out


def plot_cmc(evaluation: Evaluation, out: Path) -> Path:
    """CMC curves (served, and offline when computed) as a PNG."""
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
    fig.savefig(out)
    plt.close(fig)
    return out


def _result_cells(result: RankResult | None) -> list[str]:
    if result is None:
        return ["-"] * 6
    values = [result.mAP, result.mINP, *(result.rank(k) for k in (1, 5, 10, 20))]
    return [f"{100 * v:.2f}" for v in values]


def summary_table(evaluation: Evaluation) -> str:
    """The served / offline / difference table as HTML."""
    header = ["", "mAP", "mINP", "R1", "R5", "R10", "R20"]
    rows = [["served", *_result_cells(evaluation.served)]]
    if evaluation.offline is not None:
        rows.append(["offline", *_result_cells(evaluation.offline)])
    if evaluation.offline_full is not None:
        rows.append(["offline, full ranking", *_result_cells(evaluation.offline_full)])
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def write_report(
    evaluation: Evaluation, dataset: ReIDDataset, directory: str | Path, num_queries: int = 10
) -> Path:
    """Write ``index.html``, ``cmc.png`` and the rank-list images; returns the HTML path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    plot_cmc(evaluation, directory / "cmc.png")
    rows = []
    if evaluation.rankings is not None:
        for query in sample_queries(dataset, num_queries):
            name = f"ranklists/query_{query:05d}.png"
            ranked = ranked_list(evaluation.rankings.distmat, query, dataset)
            draw_rank_list(dataset, query, ranked, directory / name)
            alt = f"query {query} ({dataset.query[query].path.name})"
            rows.append(f'<p>{html.escape(alt)}<br><img src="{name}" alt="{html.escape(alt)}"></p>')
    diff = evaluation.max_diff
    verdict = (
        "no offline reference"
        if diff is None
        else f"largest |served - offline| = {diff:.2e} "
        f"({'within' if evaluation.passed else 'OVER'} the tolerance 1e-4)"
    )
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in evaluation.notes)
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Served-path evaluation: {html.escape(dataset.name)}</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:4px 10px;text-align:right}}
table{{border-collapse:collapse}}tr:nth-child(even){{background:#f2f2f2}}</style></head>
<body>
<h1>Served-path evaluation: {html.escape(dataset.name)}</h1>
<p>{len(dataset.query)} queries, {len(dataset.gallery)} gallery images; mode: {evaluation.mode}
{f"(k = {evaluation.k})" if evaluation.k else ""}. Scores in %.</p>
{summary_table(evaluation)}
<p>{html.escape(verdict)}</p>
<ul>{notes}</ul>
<h2>CMC curve</h2>
<img src="cmc.png" alt="CMC curve">
<h2>Rank lists (served ranking)</h2>
<p>Query with a blue border, then the top 10 with their cosine scores; green border: same
identity, red: another identity. Junk and same-identity same-camera gallery images are
left out, as in the evaluation protocol.</p>
{"".join(rows)}
</body></html>
"""
    index = directory / "index.html"
    index.write_text(page)
    return index
