"""Deployment recipes: FreezeLab replicas behind nginx (`deploy/start_replicas.py`)."""
