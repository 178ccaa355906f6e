"""The wire format: who signs (identity), what a signed message is (envelope), the
payload schemas (messages), canonical JSON and tensor codecs.

Imports nothing else of ``protocol``: every other subpackage builds on it.
"""
