# The gradsweep image: `gradsweep api`, `gradsweep worker` and `gradsweep db upgrade`
# (docker-compose.yml runs each), configured by GRADSWEEP_* environment variables.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --create-home --uid 10001 gradsweep

# The dependencies alone first, from pyproject.toml: this layer is rebuilt only when
# pyproject.toml changes, not on every change to the source. EXTRAS names optional
# dependency groups to add ("monitoring" brings Flower); `--build-arg EXTRAS=` leaves them out.
ARG EXTRAS=monitoring
COPY pyproject.toml /src/
RUN python -c "import os, tomllib; \
project = tomllib.load(open('/src/pyproject.toml', 'rb'))['project']; \
extras = [name for name in os.environ['EXTRAS'].split(',') if name]; \
print('\n'.join(project['dependencies'] + [r for name in extras for r in project['optional-dependencies'][name]]))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# Then the package itself, without touching the dependencies again.
COPY README.md /src/
COPY engine /src/engine
COPY worker /src/worker
COPY service /src/service
RUN pip install --no-deps /src && rm -rf /src

USER gradsweep
WORKDIR /home/gradsweep
EXPOSE 8000
CMD ["gradsweep", "api", "--host", "0.0.0.0"]
