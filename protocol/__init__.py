"""hypergossip's sans-IO core: identities, envelopes, schemas, codecs, round rules.

Nothing here opens a socket, starts a task or reads a clock; peer/ and
coordinator/ move the bytes and the time. It imports neither of them.

=========  =========================================================  ==================
package    holds                                                      may import
=========  =========================================================  ==================
wire       identities, envelopes, message schemas, codecs             --
crypto     group, Shamir, fixed point, range proofs, SecAgg+, vss, DP  wire
policy     admission, rate limits, attendance, replication votes      wire
learning   workloads, models, datasets, aggregators                   wire, crypto, policy
prompts    genetic search, fitness, evaluation by redundancy          wire
rounds     round modes and their registry                             all of the above
audit      the signed round log, inclusion proofs, re-derivation      all of the above
=========  =========================================================  ==================

``scripts/check/house.py`` checks the last column.
"""
