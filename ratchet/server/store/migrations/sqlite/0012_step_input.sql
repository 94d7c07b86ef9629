-- Version 12: what each step was given (its opcode's options: a wait's event and `if`, an invoke's
-- function and payload, a sleep's wake time), JSON, shown with the step; NULL for steps recorded before.
ALTER TABLE steps ADD COLUMN input TEXT;
