# syntax=docker/dockerfile:1
# Build stage: install the pinned dependencies and the app into a virtualenv.
FROM python:3.11-slim AS build
WORKDIR /app
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY requirements.lock pyproject.toml ./
COPY app ./app
COPY migrations ./migrations
# Editable install at /app: the migrations/ directory stays beside the code, where `routstr migrate` finds it.
RUN pip install --no-cache-dir -c requirements.lock -e .

# Runtime stage: the virtualenv and the source tree it points at, run as an unprivileged user.
FROM python:3.11-slim
RUN useradd --system --create-home --uid 10001 routstr
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
WORKDIR /app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    DATABASE_URL=sqlite+aiosqlite:////data/routstr.db \
    HOST=0.0.0.0 \
    PORT=8000
RUN mkdir -p /data && chown routstr:routstr /data
VOLUME ["/data"]
USER routstr
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PORT', '8000') + '/health', timeout=4)" || exit 1
CMD ["routstr", "serve"]
