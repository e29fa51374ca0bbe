"""The training path's I/O: finding shards, reading blocks, the DataLoader stream."""
