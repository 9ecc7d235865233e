-- TLS certificates, referenced by name from frontend binds. The private key is stored
-- here (the nodes need it) and never returned by the API.
CREATE TABLE certificates (
    name            TEXT PRIMARY KEY,
    cert_pem        TEXT    NOT NULL,
    key_pem         TEXT    NOT NULL,
    created_unix_ms INTEGER NOT NULL
);
