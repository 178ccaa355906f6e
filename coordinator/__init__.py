"""The hypergossip coordinator: a peer with duties (verify, run rounds, publish) and an AIM."""
