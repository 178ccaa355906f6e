"""hypergossip's sans-IO core: identities, envelopes, schemas, codecs, round rules.

Nothing here opens a socket, starts a task or reads a clock; peer/ and
coordinator/ move the bytes and the time.
"""
