-- hwsched's ClickHouse users for servers with SQL-driven access control (modern ClickHouse; the
-- statements are checked against the parser of ClickHouse 26.9). Not for 18.16, which has no SQL
-- access control: use users.d/hwsched.xml there (or on any server whose users live in XML).
--
--   hwsched_writer  the recorder (HWSCHED_CLICKHOUSE_USER / HWSCHED_CLICKHOUSE_PASSWORD)
--   hwsched_reader  Grafana's data source, `hwsched report`, the learner
--
-- Replace the two <sha256 hex ...> placeholders, then run it as a user with access management:
--     echo -n 'the password' | sha256sum              (the 64 hex digits)
--     clickhouse-client --user admin --ask-password --multiquery < deploy/clickhouse/users.sql
-- (`IDENTIFIED WITH sha256_hash BY '<hex>'` is the sha256_password method given by its hash, so
-- the password itself appears neither here nor in the query log; `IDENTIFIED WITH sha256_password
-- BY '<password>'` is the same with the password in clear.) Every statement is IF NOT EXISTS /
-- idempotent: running it again changes nothing; to change a password use ALTER USER.
-- Database `hwsched`: if hwsched runs with another one (HWSCHED_CLICKHOUSE_DATABASE), replace it.
--
-- How this was tested (tests/python/test_clickhouse_users.py): chdb (ClickHouse 26.9 in-process)
-- cannot execute CREATE USER / CREATE ROLE / CREATE SETTINGS PROFILE / GRANT ... TO: it has no
-- writable access storage (clickhouse-local takes its users from users.xml only) and always runs
-- as `default`. So the test (1) parses every statement below with chdb's parser (EXPLAIN AST:
-- syntax and privilege names), and (2) gives chdb's `default` user, through users.xml, the
-- privileges granted to each role below and the settings of its profile, then runs the real
-- migrations, inserts and a partition drop as the writer, and checks the reader's refusals. This
-- file as a whole has not been run on a ClickHouse server.

-- Settings profiles ----------------------------------------------------------------------------

-- The writer needs no setting restriction beyond its grants; limits against runaway queries.
CREATE SETTINGS PROFILE IF NOT EXISTS hwsched_writer SETTINGS
    max_memory_usage = 10000000000,
    max_concurrent_queries_for_user = 64;

-- readonly = 2: reads, and the settings the Grafana ClickHouse plugin sends with every query
-- (max_execution_time, enable_http_compression) may change; readonly = 1 would refuse them
-- (deploy/grafana/README.md). Unlike on 18.16, constraints cap what the reader may raise.
-- Alternative: readonly = 1 with `max_execution_time CHANGEABLE_IN_READONLY` and
-- `enable_http_compression CHANGEABLE_IN_READONLY` (needs settings_constraints_replace_previous,
-- the default since 24.1) -- then every further setting a client sends is refused.
CREATE SETTINGS PROFILE IF NOT EXISTS hwsched_reader SETTINGS
    readonly = 2,
    max_execution_time = 300 MAX 300,
    max_memory_usage = 10000000000 MAX 10000000000,
    max_concurrent_queries_for_user = 32 CONST;

-- Roles: the privileges -------------------------------------------------------------------------

CREATE ROLE IF NOT EXISTS hwsched_writer_role;
-- migrations: CREATE DATABASE/TABLE/MATERIALIZED VIEW ... IF NOT EXISTS, INSERT ... SELECT
-- (rollup backfill), future ALTERs; retention: TTL on modern servers (ALTER TABLE covers
-- ALTER ... DROP PARTITION -- the privilege ALTER DELETE -- used on servers without TTL).
-- CREATE VIEW (the materialized view) is implied by CREATE TABLE; listed to say it is needed.
-- No DROP, no TRUNCATE, no table functions (url, file, remote).
GRANT CREATE DATABASE, CREATE TABLE, CREATE VIEW ON hwsched.* TO hwsched_writer_role;
GRANT SELECT, INSERT, ALTER TABLE, ALTER VIEW ON hwsched.* TO hwsched_writer_role;

CREATE ROLE IF NOT EXISTS hwsched_reader_role;
-- SELECT only: no table functions (url, file, remote: not granted), no writes, no DDL.
GRANT SELECT ON hwsched.* TO hwsched_reader_role;

-- Users ------------------------------------------------------------------------------------------
-- HOST: where each connects from. These are the private address ranges plus loopback: narrow them
-- to the recorder's / Grafana's hosts or pod network (HOST ANY = anywhere).

CREATE USER IF NOT EXISTS hwsched_writer
    IDENTIFIED WITH sha256_hash BY '<sha256 hex of the writer password>'
    HOST IP '10.0.0.0/8', IP '172.16.0.0/12', IP '192.168.0.0/16', LOCAL
    SETTINGS PROFILE 'hwsched_writer';
GRANT hwsched_writer_role TO hwsched_writer;

CREATE USER IF NOT EXISTS hwsched_reader
    IDENTIFIED WITH sha256_hash BY '<sha256 hex of the reader password>'
    HOST IP '10.0.0.0/8', IP '172.16.0.0/12', IP '192.168.0.0/16', LOCAL
    SETTINGS PROFILE 'hwsched_reader';
GRANT hwsched_reader_role TO hwsched_reader;
