# The gradsweep image: `gradsweep api`, `gradsweep worker` and `gradsweep db upgrade`
# (docker-compose.yml runs each), configured by GRADSWEEP_* environment variables.
# PYTHON_IMAGE is python:3.11-slim, or a stand-in built by docker/offline-build.sh where no
# registry can be reached. Packages come from docker/wheelhouse/ when it holds wheels (the
# same script fills it), from PyPI otherwise.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/gradsweep
# The dependencies alone first: this layer is rebuilt only when pyproject.toml (or the
# wheelhouse) changes, not on every change to the source. EXTRAS names optional dependency
# groups to add ("monitoring" brings Flower); `--build-arg EXTRAS=` leaves them out.
ARG EXTRAS=monitoring
COPY pyproject.toml docker/requirements.py /src/
COPY docker/wheelhouse/ /wheels/
RUN if ls /wheels/*.whl >/dev/null 2>&1; then echo "--no-index --find-links=/wheels" > /src/index.txt; \
    else : > /src/index.txt; fi \
    && python /src/requirements.py /src/pyproject.toml "$EXTRAS" > /src/requirements.txt \
    && /opt/gradsweep/bin/pip install $(cat /src/index.txt) -r /src/requirements.txt
# Then the package itself, without touching the dependencies again.
COPY README.md /src/
COPY gradsweep /src/gradsweep
COPY engine /src/engine
COPY worker /src/worker
COPY service /src/service
RUN /opt/gradsweep/bin/pip install $(cat /src/index.txt) --no-deps /src

# The image we run: the virtual environment alone, without the wheelhouse or the source.
FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/gradsweep/bin:$PATH
RUN useradd --create-home --uid 10001 gradsweep
COPY --from=build /opt/gradsweep /opt/gradsweep
USER gradsweep
WORKDIR /home/gradsweep
EXPOSE 8000
CMD ["gradsweep", "api", "--host", "0.0.0.0"]
