"""The method registry: `METHODS.get(name)(config, num_labels=, text_dim=)`."""
from crossmodal_hash import registry

METHODS = registry.Registry('method')
