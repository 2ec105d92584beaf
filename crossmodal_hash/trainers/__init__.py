"""Trainers, one per family of methods, registered by name."""
from crossmodal_hash.trainers import alternating  # pylint: disable=unused-import  # Registers 'alternating'.
from crossmodal_hash.trainers import registry

TRAINERS = registry.TRAINERS
