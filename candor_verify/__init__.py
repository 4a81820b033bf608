"""What an auditor needs to check Candor's audit log offline: the Merkle tree, signed notes and checkpoints.

Standard library and ``cryptography`` only, so it installs in seconds in a clean environment."""
