# spikewatch in a container (deploy/compose/docker-compose.yml uses it). Not built in this
# project's CI: its machines have no Docker engine.
FROM node:20-slim AS assets
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund

FROM python:3.11-slim
WORKDIR /opt/spikewatch
COPY . .
COPY --from=assets /src/node_modules/lightweight-charts/dist/lightweight-charts.standalone.production.js src/spikewatch/web/static/vendor/
RUN pip install --no-cache-dir '.[distributed]'
USER nobody
EXPOSE 5000
CMD ["spikewatch", "run", "--host", "0.0.0.0"]
