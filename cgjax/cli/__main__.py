import sys

from cgjax.cli import main

sys.exit(main())
