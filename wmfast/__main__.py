"""`python -m wmfast ...` (and `torchrun ... -m wmfast train ...`) runs the wmfast command."""
import sys

from wmfast.cli import main

if __name__ == "__main__":
    sys.exit(main())
