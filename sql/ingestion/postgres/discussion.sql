-- name: discussion_threads_lookup
-- The known thread roots among `:roots` (a JSON array of group message ids) and the posts they stand
-- for. A dialect variant because the array is unpacked with jsonb_array_elements_text. Served by:
-- discussion_threads primary key (one probe per root).
-- example: source_id=durov roots='[51000,51001,51002]'
SELECT root_id, post_id, post_date FROM ingestion.discussion_threads
WHERE source_id = :source_id
  AND root_id IN (SELECT CAST(jsonb_array_elements_text(:roots) AS bigint));
