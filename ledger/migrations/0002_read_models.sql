-- Read models (CQRS): derived from postings, rebuilt from scratch, never the source of truth.

-- Closing balance of an account at the end of each UTC day it had postings; a day
-- without postings has no row (its closing balance is the previous row's).
CREATE TABLE daily_balances (
    account_id      text NOT NULL,
    day             date NOT NULL,
    currency        char(3) NOT NULL,
    closing_balance bigint NOT NULL,
    PRIMARY KEY (account_id, day)
);
