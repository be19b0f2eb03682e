"""The plumbing every layer uses; it imports nothing from the rest of the project."""
