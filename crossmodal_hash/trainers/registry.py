"""The trainer registry: `TRAINERS.get(method.trainer)(config, workdir)`."""
from crossmodal_hash import registry

TRAINERS = registry.Registry('trainer')
