-- Adaptive chunk sizing (OpenJD's TASK_CHUNKING extension, a CHUNK[INT]
-- parameter with chunks.targetRuntimeSeconds; docs/jobs.md, "Adaptive
-- chunks"). The scheduler resizes such a layer's chunks as it claims them,
-- from the runtimes of the layer's finished chunks.
--
-- layers.chunk_target_s is the target, for the layers whose chunks are
-- resized (layers.openjd.chunks.adaptive, decided at submission): NULL for
-- every other layer, so that the claim asks nothing more of them than this
-- column. An adaptive layer's tasks are numbered by the offset of their
-- first value in the layer's values (tasks.index leaves a gap after each
-- chunk of more than one value), so that a chunk split in two keeps both
-- halves in order without renumbering anything: the second half takes the
-- index of its own first value, which no other task can hold.

ALTER TABLE layers
    ADD COLUMN chunk_target_s integer GENERATED ALWAYS AS (
        CASE WHEN (openjd->'chunks'->>'adaptive')::boolean
            THEN (openjd->'chunks'->>'target_runtime_s')::integer END) STORED;
