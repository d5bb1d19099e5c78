-- The demo database of docker-compose.yml: a small multi-tenant schema and the relay's role.
-- Run once by the postgres image, as the superuser, in the database POSTGRES_DB (demo), on the
-- first start with an empty data directory.

-- Every table carries its tenant, and the tenant is part of the primary key: then updates and
-- deletes carry the tenant too (docs/decoder.md, "Recommendation for multi-tenant tables").
CREATE TABLE customers (
    tenant_id  text        NOT NULL,
    id         bigint      NOT NULL,
    name       text        NOT NULL,
    email      text,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE orders (
    tenant_id   text          NOT NULL,
    id          bigint        NOT NULL,
    customer_id bigint        NOT NULL,
    status      text          NOT NULL DEFAULT 'new'
                CHECK (status IN ('new', 'paid', 'shipped', 'cancelled')),
    total       numeric(12,2) NOT NULL,
    created_at  timestamptz   NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, customer_id) REFERENCES customers (tenant_id, id)
);

-- A few rows to start from. They are written before the relay creates its slot: its initial
-- snapshot sends them as "read" messages (docs/snapshots.md), then the stream follows.
INSERT INTO customers (tenant_id, id, name, email) VALUES
    ('acme',    1, 'Ada Lovelace',   'ada@acme.example'),
    ('acme',    2, 'Charles Babbage', 'charles@acme.example'),
    ('globex',  1, 'Hank Scorpio',   'hank@globex.example'),
    ('initech', 1, 'Peter Gibbons',  'peter@initech.example');

INSERT INTO orders (tenant_id, id, customer_id, status, total) VALUES
    ('acme',    1, 1, 'paid',    120.00),
    ('acme',    2, 2, 'new',      35.50),
    ('globex',  1, 1, 'shipped', 999.99),
    ('initech', 1, 1, 'new',      12.00);

-- The relay's role: REPLICATION to create and stream the slot. Logical decoding reads WAL, not
-- tables (docs/decoder.md, "A role for the consumer"); the initial snapshot reads the tables, so
-- the role may read them too (docs/snapshots.md). The password is a demo password, given to the
-- relay as PGPASSWORD in docker-compose.yml.
CREATE ROLE bw_relay REPLICATION LOGIN PASSWORD 'bw_relay_demo';
GRANT SELECT ON ALL TABLES IN SCHEMA public TO bw_relay;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO bw_relay;
