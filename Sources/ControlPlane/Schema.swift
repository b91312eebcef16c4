import Storage

/// The control plane's numbered schema migrations. Append only; never edit a shipped one.
enum Schema {
    static let migrations: [Migration] = [
        Migration(version: 1, name: "initial", sql: """
        CREATE TABLE accounts (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            kind TEXT NOT NULL,
            managed_by TEXT REFERENCES accounts(id),
            created_at REAL NOT NULL
        );
        CREATE TABLE operators (
            username TEXT PRIMARY KEY,
            account_id TEXT NOT NULL REFERENCES accounts(id),
            password_hash TEXT NOT NULL,
            created_at REAL NOT NULL
        );
        CREATE TABLE devices (
            id TEXT PRIMARY KEY,
            owner TEXT NOT NULL REFERENCES accounts(id),
            provisioner TEXT NOT NULL REFERENCES accounts(id),
            state TEXT NOT NULL DEFAULT 'escrow',          -- escrow | active
            mode TEXT NOT NULL DEFAULT 'escrow',           -- what the device last reported
            online INTEGER NOT NULL DEFAULT 0,
            last_seen REAL,
            created_at REAL NOT NULL,
            activated_at REAL,
            agent_version TEXT,
            fingerprint TEXT,
            cert_serial TEXT,
            desired_version INTEGER NOT NULL DEFAULT 0,
            applied_version INTEGER NOT NULL DEFAULT 0,
            config_state TEXT NOT NULL DEFAULT 'none',     -- none | pending | applied | rejected
            config_reason TEXT,
            csr TEXT
        );
        CREATE INDEX devices_owner ON devices(owner, id);
        CREATE INDEX devices_unconverged ON devices(id) WHERE config_state = 'pending';
        CREATE TABLE configs (
            device_id TEXT NOT NULL REFERENCES devices(id),
            version INTEGER NOT NULL,
            payload BLOB NOT NULL,
            created_at REAL NOT NULL,
            PRIMARY KEY (device_id, version)
        ) WITHOUT ROWID;
        CREATE TABLE transfers (
            id TEXT PRIMARY KEY,
            from_account TEXT NOT NULL REFERENCES accounts(id),
            to_account TEXT NOT NULL REFERENCES accounts(id),
            note TEXT,
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL,
            status TEXT NOT NULL
        );
        CREATE INDEX transfers_open ON transfers(expires_at) WHERE status IN ('pending', 'partially_approved');
        CREATE INDEX transfers_from ON transfers(from_account);
        CREATE INDEX transfers_to ON transfers(to_account);
        CREATE TABLE transfer_items (
            transfer_id TEXT NOT NULL REFERENCES transfers(id),
            position INTEGER NOT NULL,
            device_id TEXT NOT NULL REFERENCES devices(id),
            outcome TEXT NOT NULL,                          -- pending | approved | rejected | cancelled | expired
            action TEXT,
            reason TEXT,
            decided_at REAL,
            PRIMARY KEY (transfer_id, device_id)
        ) WITHOUT ROWID;
        -- A device is in at most one pending request: enforced by the database too.
        CREATE UNIQUE INDEX transfer_items_one_pending ON transfer_items(device_id) WHERE outcome = 'pending';
        CREATE TABLE custody (
            device_id TEXT NOT NULL REFERENCES devices(id),
            seq INTEGER NOT NULL,
            holder TEXT NOT NULL,
            previous_holder TEXT,
            at REAL NOT NULL,
            transfer_id TEXT,
            decision TEXT NOT NULL,
            previous_hash TEXT NOT NULL,
            hash TEXT NOT NULL,
            PRIMARY KEY (device_id, seq)
        ) WITHOUT ROWID;
        CREATE TABLE profiles (
            account_id TEXT NOT NULL REFERENCES accounts(id),
            name TEXT NOT NULL,
            version INTEGER NOT NULL,
            settings TEXT NOT NULL,
            heartbeat_interval INTEGER NOT NULL,
            is_default INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (account_id, name)
        ) WITHOUT ROWID;
        CREATE TABLE requests (
            account_id TEXT NOT NULL,
            request_id TEXT NOT NULL,
            command TEXT NOT NULL,
            reply BLOB NOT NULL,
            created_at REAL NOT NULL,
            PRIMARY KEY (account_id, request_id)
        ) WITHOUT ROWID;
        CREATE TABLE outbox (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            topic TEXT NOT NULL,
            payload BLOB NOT NULL
        );
        CREATE TABLE authorities (
            account_id TEXT PRIMARY KEY REFERENCES accounts(id),
            certificate TEXT NOT NULL,
            private_key TEXT NOT NULL
        );
        """),
        Migration(version: 2, name: "owner identities and revocations", sql: """
        -- The identity issued for the new owner on activation, until the device acks a configuration carrying it.
        ALTER TABLE devices ADD COLUMN next_certificate TEXT;
        ALTER TABLE devices ADD COLUMN next_fingerprint TEXT;
        ALTER TABLE devices ADD COLUMN next_serial TEXT;
        -- The first configuration version that carries next_certificate.
        ALTER TABLE devices ADD COLUMN rotation_version INTEGER;
        -- Certificates the broker refuses, per issuing authority (the account whose CA signed them).
        CREATE TABLE revocations (
            account_id TEXT NOT NULL REFERENCES accounts(id),
            serial TEXT NOT NULL,
            device_id TEXT NOT NULL,
            revoked_at REAL NOT NULL,
            PRIMARY KEY (account_id, serial)
        ) WITHOUT ROWID;
        """),
        Migration(version: 3, name: "identity issuers and presence sessions", sql: """
        -- The account whose authority signed the device's current certificate (NULL: its provisioner,
        -- which signed the escrow identity) and the one that signed next_certificate.
        ALTER TABLE devices ADD COLUMN cert_issuer TEXT;
        ALTER TABLE devices ADD COLUMN next_issuer TEXT;
        -- The newest connection session seen in the device's status (DeviceStatus.session): presence
        -- from an older connection (a late will) is ignored.
        ALTER TABLE devices ADD COLUMN presence_session INTEGER;
        """),
        Migration(version: 4, name: "fleet listing indexes", sql: """
        -- device.list by state or presence within an account (the console's fleet page at 100,000
        -- devices), and id prefixes as index ranges (Ledger.devices).
        CREATE INDEX devices_owner_state ON devices(owner, state, id);
        CREATE INDEX devices_owner_online ON devices(owner, online, id);
        -- When each outbox row was committed: /metrics reports the oldest one's age.
        ALTER TABLE outbox ADD COLUMN created_at REAL;
        """),
        Migration(version: 5, name: "account tombstones and profile use", sql: """
        -- account.delete keeps the row as a tombstone: custody chains, transfers and revocations
        -- name the account, and its id is never given to a new account.
        ALTER TABLE accounts ADD COLUMN deleted_at REAL;
        -- The stored profile (and its version) the device's desired configuration was pushed from;
        -- NULL: the built-in default, explicit settings, or pushed before this migration.
        ALTER TABLE devices ADD COLUMN profile TEXT;
        ALTER TABLE devices ADD COLUMN profile_version INTEGER;
        CREATE INDEX devices_owner_profile ON devices(owner, profile) WHERE profile IS NOT NULL;
        """),
        Migration(version: 6, name: "device retirement", sql: """
        -- device.retire: state 'retired', when; the custody entry that ends the chain carries the reason.
        ALTER TABLE devices ADD COLUMN retired_at REAL;
        ALTER TABLE custody ADD COLUMN reason TEXT;
        -- Retained clears (empty retained payloads on a retired device's topics) go through the outbox.
        ALTER TABLE outbox ADD COLUMN retain INTEGER NOT NULL DEFAULT 0;
        """),
        Migration(version: 7, name: "event log", sql: """
        -- Every committed event, per account, numbered 1, 2, 3, ... with no gap (events.since): the
        -- broker loses queued QoS 1 messages when it is killed, the ledger does not. Pruned by age.
        CREATE TABLE events (
            account_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            type TEXT NOT NULL,
            at REAL NOT NULL,
            payload BLOB NOT NULL,
            PRIMARY KEY (account_id, seq)
        ) WITHOUT ROWID;
        CREATE INDEX events_at ON events(account_id, at);
        -- The last number handed out per account: kept apart so pruning never reuses one.
        CREATE TABLE event_sequences (
            account_id TEXT PRIMARY KEY,
            last_seq INTEGER NOT NULL
        ) WITHOUT ROWID;
        """),
        Migration(version: 8, name: "presence leases", sql: """
        -- The heartbeat interval of the device's newest configuration (NULL: none pushed, the escrow
        -- default): a device silent for a few of them is offline (presence by lease).
        ALTER TABLE devices ADD COLUMN heartbeat_interval INTEGER;
        UPDATE devices SET heartbeat_interval = (
            SELECT json_extract(CAST(c.payload AS TEXT), '$.heartbeatInterval') FROM configs c
            WHERE c.device_id = devices.id AND c.version = devices.desired_version);
        """, postgres: """
        ALTER TABLE devices ADD COLUMN heartbeat_interval BIGINT;
        UPDATE devices SET heartbeat_interval = (
            SELECT (convert_from(c.payload, 'UTF8')::json ->> 'heartbeatInterval')::bigint FROM configs c
            WHERE c.device_id = devices.id AND c.version = devices.desired_version);
        """),
        Migration(version: 9, name: "operator roles", sql: """
        -- full: every command where the operator may act; support: the read-only ones only (the
        -- broker ACL lists those command topics alone).
        ALTER TABLE operators ADD COLUMN role TEXT NOT NULL DEFAULT 'full';
        """),
        Migration(version: 10, name: "audit log", sql: """
        -- Every state-changing command, answered or refused: who (the broker-stamped username,
        -- escrow-operator), when, what. audit.list reads it per account, newest first.
        CREATE TABLE audit (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            account_id TEXT NOT NULL,
            at REAL NOT NULL,
            operator TEXT,
            command TEXT NOT NULL,
            request_id TEXT,
            ok INTEGER NOT NULL,
            code TEXT
        );
        CREATE INDEX audit_account ON audit(account_id, id);
        """),
        Migration(version: 11, name: "custody operators", sql: """
        -- The operator whose command made each custody step (the broker's escrow-operator stamp),
        -- hashed into the entry when present.
        ALTER TABLE custody ADD COLUMN operator TEXT;
        """),
    ]
}
