-- atelier's store, PostgreSQL. Times are milliseconds since the Unix epoch (BIGINT),
-- JSON documents are TEXT: the same types on PostgreSQL and SQLite keep one code path.

CREATE TABLE experiments (
    id          BIGSERIAL PRIMARY KEY,
    name        TEXT NOT NULL,
    source      TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX experiments_name ON experiments (name, id);

CREATE TABLE jobs (
    id               BIGSERIAL PRIMARY KEY,
    experiment_id    BIGINT NOT NULL REFERENCES experiments (id),
    name             TEXT NOT NULL,
    kind             TEXT NOT NULL,
    params           TEXT NOT NULL,
    sweep_point      TEXT NOT NULL DEFAULT '',
    state            TEXT NOT NULL,
    priority         BIGINT NOT NULL DEFAULT 0,
    attempt          BIGINT NOT NULL DEFAULT 0,
    max_attempts     BIGINT NOT NULL,
    req_gpus         BIGINT NOT NULL DEFAULT 0,
    req_gpu_mem_gb   DOUBLE PRECISION NOT NULL DEFAULT 0,
    req_backend      TEXT NOT NULL DEFAULT 'any',
    req_labels       TEXT NOT NULL DEFAULT '{}',
    pending_needs    BIGINT NOT NULL DEFAULT 0,
    -- How many jobs need this one: completion skips the unblocking UPDATE at 0.
    dependents       BIGINT NOT NULL DEFAULT 0,
    lease_token      BIGINT NOT NULL DEFAULT 0,
    lease_deadline   BIGINT,
    worker_id        TEXT,
    gpu_indexes      TEXT NOT NULL DEFAULT '',
    progress         DOUBLE PRECISION NOT NULL DEFAULT 0,
    progress_message TEXT NOT NULL DEFAULT '',
    result           TEXT NOT NULL DEFAULT '',
    reason           TEXT NOT NULL DEFAULT '',
    created_at       BIGINT NOT NULL,
    started_at       BIGINT,
    finished_at      BIGINT,
    UNIQUE (experiment_id, name)
);
CREATE INDEX jobs_queue ON jobs (priority DESC, id) WHERE state = 'queued' AND pending_needs = 0;
CREATE INDEX jobs_running ON jobs (lease_deadline) WHERE state = 'running';
CREATE INDEX jobs_experiment ON jobs (experiment_id, id);
CREATE INDEX jobs_state ON jobs (state, id);

CREATE TABLE job_needs (
    job_id    BIGINT NOT NULL REFERENCES jobs (id),
    needs_id  BIGINT NOT NULL REFERENCES jobs (id),
    PRIMARY KEY (job_id, needs_id)
);
CREATE INDEX job_needs_needs ON job_needs (needs_id);

CREATE TABLE job_attempts (
    job_id       BIGINT NOT NULL REFERENCES jobs (id),
    lease_token  BIGINT NOT NULL,
    attempt      BIGINT NOT NULL,
    worker_id    TEXT NOT NULL,
    started_at   BIGINT NOT NULL,
    ended_at     BIGINT,
    outcome      TEXT NOT NULL DEFAULT 'running',
    reason       TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (job_id, lease_token)
);

CREATE TABLE job_logs (
    id       BIGSERIAL PRIMARY KEY,
    job_id   BIGINT NOT NULL REFERENCES jobs (id),
    attempt  BIGINT NOT NULL,
    at       BIGINT NOT NULL,
    line     TEXT NOT NULL
);
CREATE INDEX job_logs_job ON job_logs (job_id, id);

CREATE TABLE workers (
    id             TEXT PRIMARY KEY,
    name           TEXT NOT NULL,
    backend        TEXT NOT NULL,
    gpus           TEXT NOT NULL,
    labels         TEXT NOT NULL,
    cpu_slots      BIGINT NOT NULL,
    version        TEXT NOT NULL,
    registered_at  BIGINT NOT NULL,
    last_seen      BIGINT NOT NULL,
    running        TEXT NOT NULL DEFAULT '[]'
);

CREATE TABLE artifacts (
    id          BIGSERIAL PRIMARY KEY,
    job_id      BIGINT NOT NULL REFERENCES jobs (id),
    attempt     BIGINT NOT NULL,
    name        TEXT NOT NULL,
    sha256      TEXT NOT NULL,
    size        BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    UNIQUE (job_id, name)
);
CREATE INDEX artifacts_sha ON artifacts (sha256);
