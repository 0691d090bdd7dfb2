-- One row that the readiness check and the start-up check write, so that they learn whether
-- the database can write now (a full disk, a read-only or damaged file) rather than only
-- whether it answers a read.
CREATE TABLE readiness_probe (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    probed_at INTEGER NOT NULL
);
