"""Bit-packed Hamming retrieval: packing, distances, exact top-k, indexes."""
