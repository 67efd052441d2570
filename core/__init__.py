"""The helpline domain: pure functions and persistence. Imports no other package of ours."""
