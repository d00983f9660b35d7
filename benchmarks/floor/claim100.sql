-- The SQL floor of W1 (benchmarks/floor/pgbench_floor.py): claim 100 due job(s), then finish
-- them, each statement its own transaction (autocommit) as a worker's claim and outcome are.
WITH claimed AS (
    UPDATE floor_job SET state = 'running'
    WHERE id IN (
        SELECT id FROM floor_job
        WHERE state = 'queued' AND due_at <= now()
        ORDER BY due_at, id
        LIMIT 100
        FOR UPDATE SKIP LOCKED
    )
    RETURNING id
)
SELECT coalesce(string_agg(id::text, ','), '0') AS ids FROM claimed
\gset
DELETE FROM floor_job WHERE id IN (:ids);
