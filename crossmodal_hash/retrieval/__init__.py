"""Exact retrieval: bit-packed Hamming search, cosine search, index files.

Modules: `packing` (uint32 bit-packing), `hamming_cpu` (the CPU Hamming
kernel, numba: exact top-k with a running k-th-distance bound, and the
evaluation's distance pass), `hamming` (blocked XOR-popcount XLA kernels),
`radix_select` (exact top-k of one chunk by radix select on distance
digits), `search` (one device: query batches x database chunks), `sharded`
(database sharded over a mesh axis with `jax.shard_map`), `cosine` (exact
top-k cosine search of real-valued embeddings, streamed in blocks, one
device or sharded), `index` (`HammingIndex` and `CosineIndex`: build, add,
search, save/load; one file format for both), `faiss_io` (FAISS
IndexBinaryFlat files and objects).
"""
