"""Datasets, registered by name. Importing this package registers them."""
from crossmodal_hash.data import builtin  # pylint: disable=unused-import  # Registers datasets.
from crossmodal_hash.data import registry
from crossmodal_hash.data import user_files  # pylint: disable=unused-import  # Registers datasets.

DATASETS = registry.DATASETS
