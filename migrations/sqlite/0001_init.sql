-- atelier's store, SQLite (the embedded default). Times are milliseconds since the Unix epoch (INTEGER),
-- JSON documents are TEXT: the same types on PostgreSQL and SQLite keep one code path.

CREATE TABLE experiments (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT NOT NULL,
    source      TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX experiments_name ON experiments (name, id);

CREATE TABLE jobs (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    experiment_id    INTEGER NOT NULL REFERENCES experiments (id),
    name             TEXT NOT NULL,
    kind             TEXT NOT NULL,
    params           TEXT NOT NULL,
    sweep_point      TEXT NOT NULL DEFAULT '',
    state            TEXT NOT NULL,
    priority         INTEGER NOT NULL DEFAULT 0,
    attempt          INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    req_gpus         INTEGER NOT NULL DEFAULT 0,
    req_gpu_mem_gb   REAL NOT NULL DEFAULT 0,
    req_backend      TEXT NOT NULL DEFAULT 'any',
    req_labels       TEXT NOT NULL DEFAULT '{}',
    pending_needs    INTEGER NOT NULL DEFAULT 0,
    -- How many jobs need this one: completion skips the unblocking UPDATE at 0.
    dependents       INTEGER NOT NULL DEFAULT 0,
    lease_token      INTEGER NOT NULL DEFAULT 0,
    lease_deadline   INTEGER,
    worker_id        TEXT,
    gpu_indexes      TEXT NOT NULL DEFAULT '',
    progress         REAL NOT NULL DEFAULT 0,
    progress_message TEXT NOT NULL DEFAULT '',
    result           TEXT NOT NULL DEFAULT '',
    reason           TEXT NOT NULL DEFAULT '',
    created_at       INTEGER NOT NULL,
    started_at       INTEGER,
    finished_at      INTEGER,
    UNIQUE (experiment_id, name)
);
CREATE INDEX jobs_queue ON jobs (priority DESC, id) WHERE state = 'queued' AND pending_needs = 0;
CREATE INDEX jobs_running ON jobs (lease_deadline) WHERE state = 'running';
CREATE INDEX jobs_experiment ON jobs (experiment_id, id);
-- No index on (state, id) here: without ANALYZE statistics SQLite would pick it for
-- the lease query and sort every queued job on each lease, instead of walking jobs_queue.

CREATE TABLE job_needs (
    job_id    INTEGER NOT NULL REFERENCES jobs (id),
    needs_id  INTEGER NOT NULL REFERENCES jobs (id),
    PRIMARY KEY (job_id, needs_id)
);
CREATE INDEX job_needs_needs ON job_needs (needs_id);

CREATE TABLE job_attempts (
    job_id       INTEGER NOT NULL REFERENCES jobs (id),
    lease_token  INTEGER NOT NULL,
    attempt      INTEGER NOT NULL,
    worker_id    TEXT NOT NULL,
    started_at   INTEGER NOT NULL,
    ended_at     INTEGER,
    outcome      TEXT NOT NULL DEFAULT 'running',
    reason       TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (job_id, lease_token)
);

CREATE TABLE job_logs (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id   INTEGER NOT NULL REFERENCES jobs (id),
    attempt  INTEGER NOT NULL,
    at       INTEGER NOT NULL,
    line     TEXT NOT NULL
);
CREATE INDEX job_logs_job ON job_logs (job_id, id);

CREATE TABLE workers (
    id             TEXT PRIMARY KEY,
    name           TEXT NOT NULL,
    backend        TEXT NOT NULL,
    gpus           TEXT NOT NULL,
    labels         TEXT NOT NULL,
    cpu_slots      INTEGER NOT NULL,
    version        TEXT NOT NULL,
    registered_at  INTEGER NOT NULL,
    last_seen      INTEGER NOT NULL,
    running        TEXT NOT NULL DEFAULT '[]'
);

CREATE TABLE artifacts (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id      INTEGER NOT NULL REFERENCES jobs (id),
    attempt     INTEGER NOT NULL,
    name        TEXT NOT NULL,
    sha256      TEXT NOT NULL,
    size        INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    UNIQUE (job_id, name)
);
CREATE INDEX artifacts_sha ON artifacts (sha256);
