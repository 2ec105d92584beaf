"""crossmodal_hash: deep cross-modal hashing in JAX/Flax."""

__version__ = '0.1.0'
