import sys

from matchnas.cli import main

sys.exit(main())
