-- Pushed trainsets and prepare results cached by content.

-- `atelier trainset push`: a name and the content (a blob in the artifact store)
-- pushed under it. Pushing other content under a name adds a row; the name then
-- means the row pushed last. Pushing the same content again only moves `pushed_at`.
CREATE TABLE trainsets (
    name       TEXT NOT NULL,
    sha256     TEXT NOT NULL,
    size       BIGINT NOT NULL,
    files      BIGINT NOT NULL,
    pushed_at  BIGINT NOT NULL,
    PRIMARY KEY (name, sha256)
);
CREATE INDEX trainsets_sha ON trainsets (sha256);

-- sha256 of a job's kind and its params with the input content pinned (a `prepare`
-- job on a pushed trainset); '' when the job's input is not known at submit. Jobs
-- with the same key give the same artifacts: one runs, the others reuse its own.
ALTER TABLE jobs ADD COLUMN cache_key TEXT NOT NULL DEFAULT '';
CREATE INDEX jobs_cache_key ON jobs (cache_key, id) WHERE cache_key <> '';
