"""CUB-200-2011 loading, download, preprocessing, a packed cache, and a generated fine-grained bird set.

- `data.cub.CUB200`: the official files and split, bounding boxes, class subsets.
- `data.download`: fetch, verify and safely extract the official tarball.
- `data.transforms`: hand-written augmentation and normalization on uint8 tensors.
- `data.prepare`: the packed, memory-mapped uint8 cache and dataset statistics.
- `data.synthetic`: procedurally drawn birds in the CUB layout, the default when no CUB is on disk.
"""
