"""Hashing methods, registered by name. Importing this package registers them."""
from crossmodal_hash.methods import dcmh  # pylint: disable=unused-import  # Registers 'dcmh'.
from crossmodal_hash.methods import dsmhn  # pylint: disable=unused-import  # Registers 'dsmhn'.
from crossmodal_hash.methods import mhtn  # pylint: disable=unused-import  # Registers 'mhtn'.
from crossmodal_hash.methods import registry
from crossmodal_hash.methods import scahn  # pylint: disable=unused-import  # Registers 'scahn'.
from crossmodal_hash.methods import ssah  # pylint: disable=unused-import  # Registers 'ssah'.
from crossmodal_hash.methods import ssal  # pylint: disable=unused-import  # Registers 'ssal'.

METHODS = registry.METHODS
