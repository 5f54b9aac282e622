"""Many devices and many hosts: the mesh, the sharding rules, and per-process data.

- :mod:`.mesh`: a ``data × fsdp × tensor`` device mesh from the config's ``mesh`` section.
- :mod:`.rules`: logical axis names (``embed``, ``mlp``, ``heads``...) → mesh axes;
  shardings of a whole training state; state initialised straight into them.
- :mod:`.hosts`: ``jax.distributed`` start-up from the environment, and each
  process's rows of the global batch.
"""
