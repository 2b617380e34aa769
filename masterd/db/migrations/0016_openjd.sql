-- Open Job Description (issue 16, part 1; docs/openjd.md): what an OpenJD
-- job keeps of its template, beside the internal job it became. All three
-- are NULL for native jobs, layers and tasks, so these columns cost native
-- work nothing (a NULL takes no room in a row).
--
-- jobs.openjd: {"name": the formatted job name, "parameters": {"Name":
--   {"type": "INT", "value": "5"}, ...} (every job parameter, defaults
--   applied), "environments": [job environments, as openjd-model's
--   model_to_object writes them], "extensions": [the template's]}.
-- layers.openjd: {"script": the step's script, "environments": [the step's
--   environments], "chunks": null or {"parameter", "default_count",
--   "target_runtime_s", "contiguous"}}.
-- tasks.parameters: {"Frame": {"type": "INT", "value": "5"}, ...}, the
--   task's parameter set (a chunk: {"type": "CHUNK[INT]", "value": "1-10"}).
--
-- Not indexed: the assign statement reads them by primary key, and a task's
-- updates stay in place (see 0005_hot_job_counts.sql).

ALTER TABLE jobs ADD COLUMN openjd jsonb;
ALTER TABLE layers ADD COLUMN openjd jsonb;
ALTER TABLE tasks ADD COLUMN parameters jsonb;
