# The lab's MLflow tracking server: MLflow at the version advgrid is tested with, plus the
# PostgreSQL driver its backend store needs (psycopg 3, as advgrid uses). Built by
# compose.yaml; standalone:
#
#   docker build -f deploy/docker/mlflow.Dockerfile -t advgrid-mlflow:3.17.2 deploy/docker

FROM python:3.12.13-slim-bookworm

ARG MLFLOW_VERSION=3.17.2
ARG PSYCOPG_VERSION=3.3.9

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN pip install "mlflow==${MLFLOW_VERSION}" "psycopg[binary]==${PSYCOPG_VERSION}" \
    && useradd --uid 10002 --create-home --shell /usr/sbin/nologin mlflow \
    && mkdir -p /mlartifacts \
    && chown mlflow:mlflow /mlartifacts

USER mlflow
WORKDIR /home/mlflow
EXPOSE 5000
ENTRYPOINT ["mlflow", "server"]
