# The segments service image: API (`segments serve`) and consumer (`segments ingest`) share it.
FROM python:3.11-slim
WORKDIR /app
RUN apt-get update && apt-get install -y --no-install-recommends libssl3 zlib1g && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md ./
COPY segments ./segments
COPY api ./api
COPY ingest ./ingest
RUN pip install --no-cache-dir .
RUN useradd --system --uid 10001 segments && mkdir -p /data && chown segments /data
USER segments
ENV SEGMENTS_HOST=0.0.0.0 SEGMENTS_PORT=8000
EXPOSE 8000
CMD ["segments", "serve"]
