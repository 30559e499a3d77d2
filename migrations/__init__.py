"""Alembic's script directory, shipped as the package data `lowcap_learning.migrations`."""
