"""The shared runtime of edgeroot's daemons (gateway, bridge, root node, witness).

What every service needs and no service owns: the systemd notify protocol, TOML configuration with key
paths, rate-limited logging, key files on disk, and the one ``Service`` lifecycle. It imports nothing
from the services or the CLI (checked by the import contracts in ``make test``).
"""
