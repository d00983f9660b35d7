-- The SQL floor of W1 (benchmarks/floor/pgbench_floor.py): claim :per_claim due job(s), then
-- finish them, each statement its own transaction (autocommit) as a worker's claim and
-- outcome are. pgbench fills in :per_claim (--define=per_claim=N).
WITH claimed AS (
    UPDATE floor_job SET state = 'running'
    WHERE id IN (
        SELECT id FROM floor_job
        WHERE state = 'queued' AND due_at <= now()
        ORDER BY due_at, id
        LIMIT :per_claim
        FOR UPDATE SKIP LOCKED
    )
    RETURNING id
)
SELECT coalesce(string_agg(id::text, ','), '0') AS ids FROM claimed
\gset
DELETE FROM floor_job WHERE id IN (:ids);
