# CPU image of the re-ID search server: python -m server over HTTP (8000) and gRPC (50051).
#
#   docker build -t reid-server .
#   docker run -p 8000:8000 -p 50051:50051 \
#       -v "$PWD/runs/demo/export:/models:ro" -v reid-gallery:/gallery reid-server
#   (several servers on one gallery: --gallery milvus://HOST:19530/COLLECTION
#    --thumbnail-dir /thumbs, with /thumbs a volume they all mount; docs/GALLERY.md)
#
# The install steps are scripts/install.sh, the same recipe `make` runs, with the milvus
# extra only: the serving install (onnxruntime, FAISS, FastAPI, grpcio, the Milvus client;
# no torch). Training and export need the `train` extra and are not in this image.
FROM python:3.11-slim-bookworm

ARG PIP_EXTRA_INDEX_URL=""
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_EXTRA_INDEX_URL=${PIP_EXTRA_INDEX_URL} \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

RUN groupadd --system --gid 10001 reid && useradd --system --uid 10001 --gid reid --create-home --home-dir /home/reid reid \
    && python -m venv /opt/venv

WORKDIR /app
COPY pyproject.toml README.md ./
COPY constraints ./constraints
COPY scripts/install.sh ./scripts/install.sh
COPY reid ./reid
COPY trainer ./trainer
COPY export ./export
COPY server ./server
COPY gallery ./gallery
COPY client ./client
RUN PY=/opt/venv/bin/python EXTRAS=milvus CONSTRAINTS=constraints/cpu.txt bash scripts/install.sh \
    && mkdir -p /models /gallery && chown 10001:10001 /gallery

USER 10001:10001
EXPOSE 8000 50051
VOLUME ["/gallery"]
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
ENTRYPOINT ["python", "-m", "server"]
CMD ["--model", "/models", "--gallery", "/gallery", "--host", "0.0.0.0", "--http-port", "8000", "--grpc-port", "50051"]
