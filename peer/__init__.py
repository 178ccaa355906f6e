"""The hypergossip peer daemon: a libp2p node that enrols, contributes and keeps up."""
