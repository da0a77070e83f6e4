"""Test support code shared by tests and benchmarks (local servers, data builders)."""
