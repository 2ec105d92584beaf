"""The dataset registry: `DATASETS.get(name)(config.dataset) -> MultiModalData`."""
from crossmodal_hash import registry

DATASETS = registry.Registry('dataset')
