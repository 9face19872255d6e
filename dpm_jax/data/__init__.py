"""Data: toy generators now; tfds and image-folder loaders join them later."""

from dpm_jax.data.heartbeat import Heartbeat
from dpm_jax.data.swiss_roll import SwissRoll

__all__ = ["Heartbeat", "SwissRoll"]
