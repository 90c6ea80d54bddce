"""Grafana dashboards as code (grafana-foundation-sdk), their provisioning and their checks.

``city``, ``district``, ``device``, ``alerts`` and ``pipeline`` build one dashboard each;
``catalogue`` renders them to JSON in English and Korean (``dashboards/generated/<lang>/``);
``check`` validates the structure, ``probe`` runs every query against InfluxDB, ``push`` uploads
to a running Grafana, ``deploy`` knows the provisioning files and the compose mounts.
"""
