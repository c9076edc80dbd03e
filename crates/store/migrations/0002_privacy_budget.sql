-- Differential-privacy budget spent by each principal for each purpose, in exact units:
-- epsilon in millionths, delta in 1e-15ths. A row only grows.
CREATE TABLE privacy_budget (
    principal     TEXT NOT NULL,
    purpose       TEXT NOT NULL,
    epsilon_micro INTEGER NOT NULL,
    delta_femto   INTEGER NOT NULL,
    queries       INTEGER NOT NULL,
    updated_at    TEXT NOT NULL,
    PRIMARY KEY (principal, purpose)
);
