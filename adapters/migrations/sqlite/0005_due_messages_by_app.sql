-- The messages that may be due, by application and in id order: the worker's claim takes
-- the first due messages of each application it does not leave out, reading only them and
-- the messages it skips as leased, however long the message log and the backlog of the
-- applications it leaves out. Partial, so it holds only waiting and retrying messages.
CREATE INDEX messages_due_by_app ON messages (app, id) WHERE state IN ('WAITING', 'ERROR_RETRY');
