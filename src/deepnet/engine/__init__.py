"""The one training engine: the loop (:mod:`.fit`) and the step sources that plug into it
(:mod:`.sources`: in memory, full batch or mini-batches, the Gram path, a streamed file,
MPI data-parallel shards)."""
