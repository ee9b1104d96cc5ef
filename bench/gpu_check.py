"""The prepared device check: what runs on one CUDA GPU, measured in one short call.

    bash bench/gpu_check.sh                       # on the GPU machine (< 8 min on an H100/H200)
    bash bench/gpu_check.sh --dry                 # anywhere, CPU only, tiny sizes (CI runs it)
    .venv/bin/python bench/gpu_check.py --record DIR/gpu_check.json   # rows -> docs/BENCHMARKS.md

Sections (each one independent: a missing library or device skips it with the reason,
a failure is reported and the next section runs):

- ``environment``: torch / CUDA / cuDNN versions, device name and memory, which of
  onnxruntime-gpu, TensorRT and faiss-gpu are importable.
- ``embed_torch``: eager encoder throughput (img/s) at batch 1 / 32 / 256, FP32 and
  FP16, for the demo encoder (MobileNetV2 128x64) and ResNet-50 256x128.
- ``embed_runtime``: the served runtimes on the device: ``torch`` (the exported
  ``model.pt2``), onnxruntime's CUDA execution provider, TensorRT FP16 (each where
  installed), with the cosine against eager FP32.
- ``faiss_gpu``: exact search 100k x 512 on the GPU vs the CPU, where faiss-gpu exists.
- ``served``: ``python -m server --runtime torch --device cuda`` driven over HTTP
  (one crop per ``/v1/search/raw`` request) at 1 and 32 clients, beside the raw
  runtime throughput of the same model in the same run.
- ``training``: training steps per second as images/s (ResNet-50 256x128, batch 64,
  identity CE): FP32, AMP (FP16 autocast + GradScaler), AMP + channels_last.

Writes ``gpu_check.json`` and ``gpu_check.md`` into ``--out`` (default ``$OUT`` when
set, as on the device machine, else ``runs/gpu_check``) and prints the table. Weights
are random: speed does not depend on them. ``--dry`` runs every section on the CPU at
tiny sizes so the code paths do not rot; its numbers mean nothing.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import importlib.util
import json
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

SECTION = "## GPU check (bench/gpu_check.sh)"
COMMAND = "bash bench/gpu_check.sh"


@dataclass
class Row:
    """One measured number."""

    section: str
    item: str
    value: float
    unit: str
    note: str = ""


@dataclass
class Outcome:
    """What one section did: ``ok``, ``skipped`` (with the reason) or ``failed``."""

    name: str
    status: str
    reason: str = ""
    seconds: float = 0.0
    rows: list[Row] = field(default_factory=list)


@dataclass
class Plan:
    """Sizes and budget of a run; ``dry`` shrinks everything to a CPU smoke run."""

    dry: bool
    device: str
    budget_s: float
    encoders: list[tuple[str, tuple[int, int]]]
    batches: list[int]
    min_time_s: float
    served_seconds: float
    served_clients: list[int]
    train_model: tuple[str, tuple[int, int]]
    train_batch: int
    train_steps: int
    faiss_size: int

    @classmethod
    def make(cls, dry: bool, device: str, budget_s: float) -> Plan:
        if dry:
            return cls(
                dry, device, budget_s, [("mobilenetv2", (64, 32))], [1, 4], 0.05, 1.0, [1, 4],
                ("mobilenetv2", (64, 32)), 4, 2, 2000,
            )  # fmt: skip
        return cls(
            dry, device, budget_s,
            [("mobilenetv2", (128, 64)), ("resnet50", (256, 128))], [1, 32, 256], 1.0, 6.0,
            [1, 32], ("resnet50", (256, 128)), 64, 30, 100_000,
        )  # fmt: skip


class SectionUnavailableError(Exception):
    """A section cannot run here (the message says why)."""


def environment(plan: Plan) -> list[Row]:
    import torch

    rows = [
        Row("environment", f"torch {torch.__version__}", 0, "", f"python {sys.version.split()[0]}")
    ]
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        rows.append(
            Row(
                "environment",
                torch.cuda.get_device_name(0),
                props.total_memory / 2**30,
                "GiB",
                f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, "
                f"capability {props.major}.{props.minor}",
            )
        )
    else:
        rows.append(Row("environment", "no CUDA device", 0, "", platform.processor() or ""))
    for label, probe in (
        ("onnxruntime", _ort_note),
        ("tensorrt", _trt_note),
        ("faiss", _faiss_note),
    ):
        rows.append(Row("environment", label, 0, "", probe()))
    missing = [name for name in SECTION_MODULES if importlib.util.find_spec(name) is None]
    note = f"missing: {', '.join(missing)}" if missing else "all present"
    rows.append(Row("environment", "modules the sections import", 0, "", note))
    return rows


# Third-party modules (beyond torch) the sections need: the device image may lack some.
SECTION_MODULES = ["numpy", "PIL", "pydantic", "yaml", "onnx", "onnxruntime", "faiss",
                   "fastapi", "uvicorn", "httpx", "grpc"]  # fmt: skip


def _ort_note() -> str:
    try:
        import onnxruntime as ort
    except ImportError:
        return "not installed"
    return f"{ort.__version__}: {', '.join(ort.get_available_providers())}"


def _trt_note() -> str:
    try:
        import tensorrt as trt
    except ImportError:
        return "not installed"
    return str(trt.__version__)


def _faiss_note() -> str:
    try:
        import faiss
    except ImportError:
        return "not installed"
    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    return f"{getattr(faiss, '__version__', '?')}, {gpus} GPU(s)"


def _synchronize(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _throughput(call: Callable[[], object], batch: int, plan: Plan) -> float:
    """Images/s of ``call`` (one batch each): warm-up, then at least ``min_time_s``."""
    for _ in range(2 if plan.dry else 5):
        call()
    _synchronize(plan.device)
    calls, start = 0, time.perf_counter()
    while True:
        call()
        calls += 1
        if calls >= 3 and time.perf_counter() - start >= plan.min_time_s:
            break
    _synchronize(plan.device)
    return batch * calls / (time.perf_counter() - start)


def _encoder(name: str, size: tuple[int, int]):
    from reid.models import build_model

    return build_model(name, pretrained=None, input_size=size).eval()


def embed_torch(plan: Plan) -> list[Row]:
    import torch

    precisions = ["fp32", "fp16"] if plan.device == "cuda" else ["fp32"]
    rows = []
    for name, size in plan.encoders:
        model = _encoder(name, size).to(plan.device)
        for precision in precisions:
            dtype = torch.float16 if precision == "fp16" else torch.float32
            net = model.to(dtype=dtype)
            for batch in plan.batches:
                images = torch.randn(batch, 3, *size, device=plan.device, dtype=dtype)
                with torch.inference_mode():
                    speed = _throughput(partial(net, images), batch, plan)
                label = f"{name} {size[0]}x{size[1]} {precision} batch {batch}"
                rows.append(Row("embed_torch", label, speed, "img/s", "eager, inference_mode"))
        del model
    return rows


def _export(name: str, size: tuple[int, int], out: Path) -> Path:
    """An export dir of a random-weight encoder: ``model.pt2``, and ``model.onnx`` where the
    ``onnx`` package is installed (the device image may lack it)."""
    from export.torch_export import export_program
    from reid.manifest import ExportManifest, save_manifest

    model = _encoder(name, size)
    files, precision, opset = {"torch": "model.pt2"}, {"torch": "fp32"}, None
    export_program(model, out / "model.pt2", size)
    try:
        from export.onnx_export import export_onnx_model

        opset = export_onnx_model(model, out / "model.onnx", size).opset
        files["onnx"], precision["onnx"] = "model.onnx", "fp32"
    except ImportError as exc:
        print(f"no ONNX export ({exc}); torch runtime only", flush=True)
    manifest = ExportManifest(
        model_name=name,
        embedding_dim=int(model.embedding_dim),
        preprocess=model.preprocess_config(),
        files=files,
        opset=opset,
        precision=precision,
    )
    save_manifest(manifest, out)
    return out


def embed_runtime(plan: Plan) -> list[Row]:
    import numpy as np

    from reid.runtimes import RuntimeUnavailableError, load_runtime

    rows = []
    name, size = plan.encoders[0]
    with tempfile.TemporaryDirectory() as tmp:
        export = _export(name, size, Path(tmp) / "export")
        rng = np.random.default_rng(0)
        images = rng.standard_normal((max(plan.batches), 3, *size)).astype(np.float32)
        reference = _reference_embeddings(export, images[:4])
        for runtime_name, options in _runtimes(plan, export):
            try:
                runtime = load_runtime(export, runtime_name, plan.device, **options)
            except (RuntimeUnavailableError, ImportError) as exc:
                rows.append(Row("embed_runtime", runtime_name, 0, "", f"skipped: {exc}"))
                continue
            try:
                cosine = float(np.min(np.sum(runtime.embed(images[:4]) * reference, axis=1)))
                for batch in plan.batches:
                    chunk = images[:batch]
                    speed = _throughput(partial(runtime.embed, chunk), batch, plan)
                    label = f"{runtime_name} {name} {size[0]}x{size[1]} batch {batch}"
                    rows.append(
                        Row("embed_runtime", label, speed, "img/s", f"min cosine {cosine:.6f}")
                    )
            finally:
                runtime.close()
    return rows


def _reference_embeddings(export: Path, images) -> object:
    """FP32 embeddings of the exported program on the CPU: what every runtime must match."""
    from reid.runtimes import load_runtime

    runtime = load_runtime(export, "torch", "cpu")
    try:
        return runtime.embed(images)
    finally:
        runtime.close()


def _runtimes(plan: Plan, export: Path) -> list[tuple[str, dict]]:
    runtimes: list[tuple[str, dict]] = [("torch", {}), ("onnxruntime", {})]
    if plan.device == "cuda" and _build_tensorrt(export):
        runtimes.append(("tensorrt", {}))
    return runtimes


def _build_tensorrt(export: Path) -> bool:
    """Build an FP16 engine beside the ONNX file where TensorRT is installed."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    from export.tensorrt_build import EngineOptions, build_engine
    from reid.manifest import load_manifest, save_manifest
    from reid.models.onnx_util import INPUT_NAME

    manifest = load_manifest(export)
    if "onnx" not in manifest.files:
        return False
    options = EngineOptions(
        input_name=INPUT_NAME, input_size=tuple(manifest.preprocess.input_size), fp16=True
    )
    build_engine(export / "model.onnx", export / "model.engine", options)
    manifest.files["tensorrt"], manifest.precision["tensorrt"] = "model.engine", "fp16"
    save_manifest(manifest, export)
    return True


def faiss_gpu(plan: Plan) -> list[Row]:
    import numpy as np

    try:
        import faiss
    except ImportError as exc:
        raise SectionUnavailableError("faiss is not installed") from exc
    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if gpus == 0 and not plan.dry:
        raise SectionUnavailableError("faiss has no GPU support here (faiss-cpu wheel)")
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((plan.faiss_size, 512)).astype(np.float32)
    faiss.normalize_L2(vectors)
    cpu = faiss.IndexFlatIP(512)
    cpu.add(vectors)
    indexes = [("cpu", cpu)]
    if gpus:
        indexes.append(("gpu", faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, cpu)))
    rows = []
    for label, index in indexes:
        for batch in (1, 32):
            queries = vectors[:batch]
            speed = _throughput(partial(index.search, queries, 10), batch, plan)
            rows.append(
                Row("faiss_gpu", f"flat {plan.faiss_size}x512 {label} batch {batch}", speed, "q/s")
            )
    return rows


def served(plan: Plan) -> list[Row]:
    import bench_server as bs

    from reid.runtimes import load_runtime

    name, size = plan.encoders[0]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        export = _export(name, size, Path(tmp) / "export")
        gallery = Path(tmp) / "gallery"
        bs.fill_gallery(gallery, _encoder(name, size).embedding_dim, 1000)
        images = bs.crops(64, size)
        runtime = load_runtime(export, "torch", plan.device)
        try:
            from reid.preprocess import decode_image_bytes, preprocess_batch

            for batch in (1, 32):
                decoded = [decode_image_bytes(images[i % len(images)]) for i in range(batch)]
                tensor = preprocess_batch(decoded, runtime.manifest.preprocess)
                speed = _throughput(partial(runtime.embed, tensor), batch, plan)
                rows.append(Row("served", f"raw torch runtime batch {batch}", speed, "img/s"))
        finally:
            runtime.close()
        extra = ["--runtime", "torch", "--device", plan.device, "--max-batch", "32"]
        crop = Path(tmp) / "crop.jpg"
        crop.write_bytes(images[0])
        proc, url = bs.start_server(REPO, export, gallery, Path(tmp) / "server.log", 1, extra)
        drive = bs.GENERATORS["httpx"]  # the device image has no wrk
        try:
            for clients in plan.served_clients:
                drive(url, crop, clients, 1.0)  # warm-up
                load = drive(url, crop, clients, plan.served_seconds)
                rows.append(
                    Row(
                        "served",
                        f"server {clients} clients",
                        load.requests / load.seconds,
                        "req/s",
                        f"p50 {load.p50_ms:.1f} ms, p99 {load.p99_ms:.1f} ms, "
                        f"{load.errors} errors (raw search, k=10, httpx load)",
                    )
                )
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    return rows


def training(plan: Plan) -> list[Row]:
    import torch
    from torch import nn

    name, size = plan.train_model
    modes = ["fp32", "amp", "amp+channels_last"] if plan.device == "cuda" else ["fp32"]
    rows = []
    for mode in modes:
        torch.manual_seed(0)
        encoder = _encoder(name, size).train().to(plan.device)
        head = nn.Linear(encoder.embedding_dim, 751).to(plan.device)
        params = [*encoder.parameters(), *head.parameters()]
        optimiser = torch.optim.SGD(params, lr=0.01, momentum=0.9)
        amp = mode.startswith("amp")
        scaler = torch.amp.GradScaler("cuda", enabled=amp)
        images = torch.randn(plan.train_batch, 3, *size, device=plan.device)
        labels = torch.randint(0, 751, (plan.train_batch,), device=plan.device)
        if mode.endswith("channels_last"):
            encoder = encoder.to(memory_format=torch.channels_last)
            images = images.contiguous(memory_format=torch.channels_last)

        step = partial(_train_step, encoder, head, optimiser, scaler, images, labels, amp)
        speed = _throughput(step, plan.train_batch, plan)
        label = f"{name} {size[0]}x{size[1]} batch {plan.train_batch} {mode}"
        rows.append(Row("training", label, speed, "img/s", "forward + backward + SGD step"))
    return rows


def _train_step(encoder, head, optimiser, scaler, images, labels, amp: bool) -> None:
    import torch
    from torch import nn

    optimiser.zero_grad(set_to_none=True)
    with torch.autocast(images.device.type, dtype=torch.float16, enabled=amp):
        loss = nn.functional.cross_entropy(head(encoder(images)) * 30, labels)
    scaler.scale(loss).backward()
    scaler.step(optimiser)
    scaler.update()


SECTIONS: list[tuple[str, Callable[[Plan], list[Row]]]] = [
    ("environment", environment),
    ("embed_torch", embed_torch),
    ("embed_runtime", embed_runtime),
    ("faiss_gpu", faiss_gpu),
    ("served", served),
    ("training", training),
]


def run_sections(plan: Plan, names: list[str] | None = None) -> list[Outcome]:
    """Run each section in turn within the plan's time budget; never raises."""
    deadline = time.monotonic() + plan.budget_s
    outcomes = []
    for name, section in SECTIONS:
        if names and name not in names:
            continue
        if time.monotonic() > deadline:
            outcomes.append(Outcome(name, "skipped", f"time budget of {plan.budget_s:g} s spent"))
            continue
        start = time.monotonic()
        try:
            outcome = Outcome(name, "ok", rows=section(plan))
        except SectionUnavailableError as exc:
            outcome = Outcome(name, "skipped", str(exc))
        except ImportError as exc:
            outcome = Outcome(name, "skipped", f"missing module: {exc.name or exc}")
        except Exception as exc:  # report and go on: one broken section must not hide the rest
            traceback.print_exc()
            outcome = Outcome(name, "failed", f"{type(exc).__name__}: {exc}")
        outcome.seconds = time.monotonic() - start
        outcomes.append(outcome)
        print(f"[{name}] {outcome.status} in {outcome.seconds:.1f} s {outcome.reason}", flush=True)
    return outcomes


def device_name(outcomes: list[Outcome]) -> str:
    env = next((o for o in outcomes if o.name == "environment"), None)
    if env and len(env.rows) > 1:
        return env.rows[1].item
    return "unknown device"


def render(outcomes: list[Outcome], meta: dict) -> str:
    """The markdown body for ``docs/BENCHMARKS.md``."""
    lines = [
        f"`{meta['command']}` on {meta['date']}, device: **{meta['device']}**"
        f"{' (dry run: CPU smoke test, numbers mean nothing)' if meta['dry'] else ''}. "
        "Random weights (speed does not depend on them).",
        "",
        "| section | measurement | value | unit | note |",
        "| --- | --- | ---: | --- | --- |",
    ]
    for outcome in outcomes:
        if outcome.status != "ok":
            lines.append(f"| {outcome.name} | {outcome.status} | | | {outcome.reason} |")
        for row in outcome.rows:
            value = f"{row.value:,.1f}" if row.unit else ""
            lines.append(f"| {row.section} | {row.item} | {value} | {row.unit} | {row.note} |")
    return "\n".join(lines)


def write_outputs(outcomes: list[Outcome], meta: dict, out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    payload = {"meta": meta, "sections": [asdict(o) for o in outcomes]}
    json_path, md_path = out / "gpu_check.json", out / "gpu_check.md"
    json_path.write_text(json.dumps(payload, indent=2) + "\n")
    md_path.write_text(render(outcomes, meta) + "\n")
    return json_path, md_path


def load_outputs(path: Path) -> tuple[list[Outcome], dict]:
    payload = json.loads(path.read_text())
    outcomes = []
    for raw in payload["sections"]:
        rows = [Row(**row) for row in raw.pop("rows")]
        outcomes.append(Outcome(**raw, rows=rows))
    return outcomes, payload["meta"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dry", action="store_true", help="CPU smoke run at tiny sizes")
    p.add_argument("--out", type=Path, help="where gpu_check.json/.md go (default $OUT)")
    p.add_argument("--budget", type=float, default=420.0, help="seconds for all sections")
    p.add_argument("--only", nargs="*", choices=[n for n, _ in SECTIONS], help="these sections")
    p.add_argument(
        "--record", type=Path, metavar="JSON", help="write a finished run's rows into the docs"
    )
    p.add_argument("--docs", type=Path, default=REPO / "docs" / "BENCHMARKS.md")
    args = p.parse_args(argv)
    if args.record:
        from _report import update_section

        outcomes, meta = load_outputs(args.record)
        if meta.get("dry"):
            p.error(f"{args.record} is a dry run: its numbers are not benchmarks")
        update_section(args.docs, SECTION, render(outcomes, meta))
        print(f"recorded {args.record} in {args.docs}")
        return 0
    import torch

    device = "cuda" if torch.cuda.is_available() and not args.dry else "cpu"
    if not args.dry and device != "cuda":
        p.error("no CUDA device here; run with --dry for the CPU smoke run")
    plan = Plan.make(args.dry, device, args.budget)
    outcomes = run_sections(plan, args.only)
    meta = {
        "command": COMMAND + (" --dry" if args.dry else ""),
        "date": time.strftime("%Y-%m-%d"),
        "device": device_name(outcomes),
        "dry": args.dry,
    }
    out = args.out or Path(os.environ.get("OUT") or REPO / "runs" / "gpu_check")
    json_path, md_path = write_outputs(outcomes, meta, out)
    print(render(outcomes, meta))
    print(f"\nwrote {json_path} and {md_path}")
    return 1 if any(o.status == "failed" for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
