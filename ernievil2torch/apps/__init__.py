"""Applications built on the library: similarity, zero-shot classification, batch embedding, retrieval."""
