import sys

from refusalkit.cli import main

sys.exit(main())
