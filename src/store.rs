//! The shared key-value store the budget lives in, as a narrow trait.
