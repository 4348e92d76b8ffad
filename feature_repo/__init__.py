"""Feast repository: entities, feature views and the online-store wrapper."""
