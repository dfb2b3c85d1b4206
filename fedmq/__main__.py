"""`python -m fedmq`: the `fedmq` command."""

import sys

from fedmq.coordinator.cli import main

if __name__ == "__main__":
    sys.exit(main())
