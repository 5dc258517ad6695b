-- Authentication (`auth = true`): API tokens and who owns each experiment.

-- `atelier token create`: the token is shown once; only its sha256 is kept.
-- A revoked token stays listed (`revoked_at` set) and is refused from then on.
CREATE TABLE tokens (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    name          TEXT NOT NULL,
    -- admin | user | worker
    role          TEXT NOT NULL,
    hash          TEXT NOT NULL UNIQUE,
    created_at    INTEGER NOT NULL,
    last_used_at  INTEGER,
    revoked_at    INTEGER
);
-- A name owns experiments: one live token per name, and the name can be given a new
-- token after its old one was revoked (the experiments stay its own).
CREATE UNIQUE INDEX tokens_live_name ON tokens (name) WHERE revoked_at IS NULL;

-- The name of the token that submitted the experiment; '' when auth was off.
ALTER TABLE experiments ADD COLUMN owner TEXT NOT NULL DEFAULT '';
CREATE INDEX experiments_owner ON experiments (owner, id);
