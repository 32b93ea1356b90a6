"""Deadlines, the store circuit breaker and load shedding: what keeps the service answering."""
