# One image for every Régie container; docker-compose.yml gives each its command.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml LICENSE ./
COPY events ./events
COPY services ./services
# A venv copied whole into the runtime stage: no build tools or sources left behind, and
# gunicorn imports the installed package rather than a checkout in its working folder.
RUN python -m venv /opt/regie && /opt/regie/bin/pip install .

FROM python:3.11-slim
# psycopg (pure Python, from eventsourcing[postgres]) loads libpq at run time; WeasyPrint
# lays the PDFs out with pango, in DejaVu.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libpq5 libpango-1.0-0 libpangoft2-1.0-0 \
       fonts-dejavu-core \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/regie /opt/regie
ENV PATH=/opt/regie/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN useradd --system --uid 10001 --create-home --home-dir /home/regie regie \
    && mkdir -p /home/regie/data /home/regie/metrics \
    && chown regie:regie /home/regie/data /home/regie/metrics
USER regie
WORKDIR /home/regie
EXPOSE 8000 8001 8002
CMD ["regie", "settings"]
