"""Kibana as code: saved objects (objects.py -> saved_objects.ndjson), rules.json, setup.py."""
