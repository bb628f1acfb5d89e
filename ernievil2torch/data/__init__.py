"""Datasets and inputs: one reader protocol for every dataset format, one factory that picks the format, and the
listing of what ``embed`` encodes. Nothing here runs a model."""
