import sys

from lungct.guard.cli import main

sys.exit(main())
