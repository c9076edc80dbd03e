-- A one-table schema for the database module's own tests.
CREATE TABLE t (v TEXT NOT NULL);
