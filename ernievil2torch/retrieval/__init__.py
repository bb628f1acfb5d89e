"""Retrieval as a library: ranking metrics, exact top-k search and the search back ends the service queries."""
