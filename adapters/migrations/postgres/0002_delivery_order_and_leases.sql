-- A message's deliveries in id order, straight from the index: the first deliveries of a
-- message shown in lists, and the next page of due deliveries of a broadcast, without
-- sorting every delivery of the message. It serves every look-up by message_id, so the
-- index on message_id alone goes.
CREATE INDEX deliveries_message_id ON deliveries (message_id, id);
DROP INDEX deliveries_message;

-- The messages a worker holds, found by their owner when it releases them all at shutdown.
-- Partial: only leased messages are in it, a handful at any time however long the message
-- log grows (without it, the release read every message).
CREATE INDEX messages_leased ON messages (lease_owner) WHERE lease_owner IS NOT NULL;
