-- Capabilities and matching (issue 16, part 2; docs/scheduler.md, "Matching").
--
-- Requirements beyond the minimums, on jobs (as given, for the documents)
-- and layers (what the claim reads): maximums of cpus, RAM and GPUs, the
-- operating system families and CPU architectures allowed (any of; empty:
-- any), custom OpenJD attributes ({"attr.custom.x": {"any_of": [...],
-- "all_of": [...]}}) and amounts ({"amount.custom.y": {"min": n, "max": n}}),
-- names and values in lower case.
--
-- layers.req_extra says whether any of them is set: the claim looks no
-- further for the layers without (the common case), so they cost it one
-- boolean.

ALTER TABLE jobs
    ADD COLUMN req_max_cpus integer CHECK (req_max_cpus >= 0),
    ADD COLUMN req_max_ram_mb integer CHECK (req_max_ram_mb >= 0),
    ADD COLUMN req_max_gpus integer CHECK (req_max_gpus >= 0),
    ADD COLUMN req_os_family text[] NOT NULL DEFAULT '{}',
    ADD COLUMN req_cpu_arch text[] NOT NULL DEFAULT '{}',
    ADD COLUMN req_attributes jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN req_amounts jsonb NOT NULL DEFAULT '{}';

ALTER TABLE layers
    ADD COLUMN req_max_cpus integer CHECK (req_max_cpus >= 0),
    ADD COLUMN req_max_ram_mb integer CHECK (req_max_ram_mb >= 0),
    ADD COLUMN req_max_gpus integer CHECK (req_max_gpus >= 0),
    ADD COLUMN req_os_family text[] NOT NULL DEFAULT '{}',
    ADD COLUMN req_cpu_arch text[] NOT NULL DEFAULT '{}',
    ADD COLUMN req_attributes jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN req_amounts jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN req_extra boolean NOT NULL GENERATED ALWAYS AS (
        req_max_cpus IS NOT NULL OR req_max_ram_mb IS NOT NULL OR req_max_gpus IS NOT NULL
        OR req_os_family <> '{}' OR req_cpu_arch <> '{}' OR req_attributes <> '{}'
        OR req_amounts <> '{}') STORED;

-- What an agent is, as its hello says (NULL: not reported), beside what it
-- has (cpus, ram_mb, gpus, tags).
ALTER TABLE agents
    ADD COLUMN os_family text,
    ADD COLUMN cpu_arch text,
    ADD COLUMN attributes jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN amounts jsonb NOT NULL DEFAULT '{}';

-- Whether a host (an agent's reported cpus, RAM and GPUs, NULL or 0 when
-- not reported; os family; architecture; attributes {name: [values]};
-- amounts {name: number}) meets a layer's requirements beyond the minimums.
-- The same rules as masterd.jobs.capabilities.failed.
CREATE FUNCTION masterd_capabilities_met(
    max_cpus integer, max_ram_mb integer, max_gpus integer, os_family text[], cpu_arch text[],
    attributes jsonb, amounts jsonb,
    host_cpus integer, host_ram_mb integer, host_gpus integer, host_os text, host_arch text,
    host_attributes jsonb, host_amounts jsonb
) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT (max_cpus IS NULL OR (host_cpus > 0 AND host_cpus <= max_cpus))
       AND (max_ram_mb IS NULL OR (host_ram_mb > 0 AND host_ram_mb <= max_ram_mb))
       AND (max_gpus IS NULL OR coalesce(host_gpus, 0) <= max_gpus)
       AND (os_family = '{}' OR coalesce(host_os = ANY (os_family), false))
       AND (cpu_arch = '{}' OR coalesce(host_arch = ANY (cpu_arch), false))
       AND (attributes = '{}' OR NOT EXISTS (
            SELECT 1 FROM jsonb_each(attributes) r
            WHERE NOT (coalesce(host_attributes -> r.key, '[]') @> coalesce(r.value -> 'all_of', '[]'))
               OR (r.value ? 'any_of' AND NOT EXISTS (
                    SELECT 1 FROM jsonb_array_elements_text(r.value -> 'any_of') v (value)
                    WHERE coalesce(host_attributes -> r.key, '[]') ? v.value))))
       AND (amounts = '{}' OR NOT EXISTS (
            SELECT 1 FROM jsonb_each(amounts) r
            WHERE NOT coalesce(host_amounts ? r.key, false)
               OR (host_amounts ->> r.key)::float8
                    < coalesce((r.value ->> 'min')::float8, '-infinity'::float8)
               OR (host_amounts ->> r.key)::float8
                    > coalesce((r.value ->> 'max')::float8, 'infinity'::float8)))
$$;
