"""Trainers, one per family of methods, registered by name."""
from crossmodal_hash.trainers import alternating  # pylint: disable=unused-import  # Registers 'alternating'.
from crossmodal_hash.trainers import per_step  # pylint: disable=unused-import  # Registers 'per_step'.
from crossmodal_hash.trainers import registry

TRAINERS = registry.TRAINERS
