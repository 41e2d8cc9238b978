"""Compression methods: one file each, registered by name (every module here is imported on first use)."""
