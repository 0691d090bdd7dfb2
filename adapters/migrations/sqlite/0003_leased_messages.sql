-- The messages a worker holds, found by their owner when it releases them all at shutdown.
-- Partial: only leased messages are in it, a handful at any time however long the message
-- log grows (without it, the release read every message).
CREATE INDEX messages_leased ON messages (lease_owner) WHERE lease_owner IS NOT NULL;
