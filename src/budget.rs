//! Retry budget kept in shared data (see issue 4).
