import sys

from odeserve.cli import main

sys.exit(main())
