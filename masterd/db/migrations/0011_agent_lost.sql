-- agent.lost for every agent that stays offline past the lost grace, idle
-- or not: lost_at is the disconnection (its disconnected_at) already said
-- lost, so that each disconnection is said once, by one master, whatever
-- the number of masters sweeping (docs/http-api.md, "Webhooks").

ALTER TABLE agents ADD COLUMN lost_at timestamptz;

-- Agents already offline when this runs are not news.
UPDATE agents SET lost_at = disconnected_at WHERE session IS NULL;
