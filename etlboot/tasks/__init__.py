"""Invoke task modules, one per namespace; tasks.py at the top level only assembles them."""
