"""Conversation logic driven by domain events; imports core only."""
