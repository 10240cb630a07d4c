"""The data path: everything between images on disk and normalised batches on the device.

- ``embedded`` (its public names are this package's): the demo datasets, the choice of embedded dataset, the
  Cats vs Dogs split; ``generated``: the deterministic writer they share (and the opponent-colour plane);
  ``leaves``: the dead-leaves dataset.
- ``splits``: which folder holds a split; ``shards``: writing 256-px WebDataset shards; ``shard_reader``:
  reading them (each sample once per epoch); ``decode``: decoding on the device and PIL's draft mode;
  ``jpeg``: CPU decoding of shard JPEGs; ``collate``: the workers' uint8 batches, in ``batch_buffers``'
  reusable shared memory; ``augment``: PCA lighting.

Invariant: this package imports nothing above it but the leaf helpers (``errors``, ``atomic``, ``progress``;
``model`` for one constant, inside a function): the trainer, the benchmarks and the commands import it, never
the other way round. Generated data are byte-identical for the same arguments.
"""
from .embedded import *  # noqa: F401,F403  the embedded datasets, as `timm_alexnet_split.data` has always had them
from .embedded import __all__  # noqa: F401
