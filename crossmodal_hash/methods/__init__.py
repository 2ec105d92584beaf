"""Hashing methods, registered by name. Importing this package registers them."""
from crossmodal_hash.methods import registry
from crossmodal_hash.methods import ssah  # pylint: disable=unused-import  # Registers 'ssah'.

METHODS = registry.METHODS
