"""The backup archive format: a zstd-compressed tar of `dropserver-backup.json` (first) and
`data/`.

archive   writing an archive, verifying it, unpacking it (through packages/archives.py)
metadata  what an archive says about itself, checked field by field before it is believed
"""
