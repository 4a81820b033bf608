# syntax=docker/dockerfile:1
# Candor API image: docker build -t candor . && docker run -p 8000:8000 -v candor-data:/data candor

# ---- builder: a self-contained virtualenv in /opt/venv -------------------------------------
FROM python:3.11-slim AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
COPY constraints.txt ./

# torch first, exactly pinned, from the CPU-only index: the default PyPI build pulls in
# gigabytes of CUDA libraries. PyPI stays as an extra index for torch's own dependencies;
# the +cpu local version wins over PyPI's 2.13.0 because it sorts higher.
RUN pip install --no-cache-dir pip==26.3 \
 && pip install --no-cache-dir -c constraints.txt \
        --index-url https://download.pytorch.org/whl/cpu \
        --extra-index-url https://pypi.org/simple \
        torch==2.13.0

# The project itself (not editable: the source tree stays in this stage), then bertviz's files for its
# attention views and dice-ml without their declared dependencies (see the Makefile).
COPY pyproject.toml README.md ./
COPY api ./api
COPY explainers ./explainers
COPY model_store ./model_store
RUN pip install --no-cache-dir -c constraints.txt . \
 && pip install --no-cache-dir -c constraints.txt --no-deps bertviz==1.4.1 dice-ml==0.12

# ---- runtime ---------------------------------------------------------------------------------
FROM python:3.11-slim AS runtime

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CANDOR_DATA_DIR=/data \
    CANDOR_BIND=0.0.0.0:8000

# Fonts for pictures of feature names and texts in any script (explainers/plots/fonts.py): Noto Sans CJK
# for Chinese, Japanese and Korean, Symbola for emoji and symbols (DejaVu Sans comes with matplotlib).
# Debian's font packages are pinned by the base image's release.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends fonts-noto-cjk fonts-symbola \
 && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 candor \
 && useradd --system --no-log-init --uid 10001 --gid candor --create-home --home-dir /home/candor candor \
 && mkdir -p /data \
 && chown candor:candor /data

COPY --from=builder /opt/venv /opt/venv

# Numeric id (the "candor" user created above) so orchestrators can verify it is non-root.
USER 10001:10001
WORKDIR /home/candor
VOLUME /data
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/v1/health', timeout=4)"]

CMD ["candor", "serve"]
