"""`python -m wmfast.serve ...` = `wmfast serve ...` (what `wmfast bench serve` starts as its server)."""
import sys

from wmfast.cli import main

if __name__ == "__main__":
    sys.exit(main(["serve"] + sys.argv[1:]))
