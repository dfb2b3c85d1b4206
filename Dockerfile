# One image for workers and coordinators: the `fedmq` command.
#   docker build -t fedmq .                                    # torch from the default index
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu -t fedmq .
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu124 -t fedmq:cuda .
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE}

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1

# Dependencies first: they change far less often than the source, so rebuilds reuse the layers.
RUN pip install "torch==${TORCH_VERSION}" ${TORCH_INDEX_URL:+--index-url "${TORCH_INDEX_URL}"}
WORKDIR /opt/fedmq
COPY pyproject.toml README.md ./
RUN mkdir fedmq && touch fedmq/__init__.py \
    && pip install . && pip uninstall --yes fedmq && rm -rf fedmq build

COPY protocol protocol
COPY broker broker
COPY worker worker
COPY coordinator coordinator
COPY fedmq fedmq
RUN pip install --no-deps . && rm -rf build

RUN useradd --create-home --uid 10001 fedmq && mkdir /data && chown fedmq /data
USER fedmq
WORKDIR /data
ENTRYPOINT ["fedmq"]
CMD ["--help"]
