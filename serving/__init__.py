"""The recommendation service: features, retrieval, ranking, exploration, fallbacks."""
